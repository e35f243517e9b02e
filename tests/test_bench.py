"""The benchmark script runs end to end on a tiny setting (its figures live in docs/)."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from omegaconf import OmegaConf

from tlframe.config import register_configs
from tlframe.engine.stages import build_module
from tlframe.tools import bench, bench_loops
from tlframe.tools.bench import CASES, run
from tlframe.tools.bench_device import lightning_placement
from tlframe.train import build_domains


def test_benchmark_runs_and_reports_every_case():
    table = run(steps=6, warmup=2, repeats=1, default_run=False)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "img/s" not in line]
    assert len(rows) == len(CASES)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[1]) > 0 and float(cells[2]) > 0 and float(cells[3]) > 0
        assert float(cells[5]) > 0 and float(cells[6]) > 0  # the bare Lightning module's


def test_the_bare_lightning_module_trains_the_plain_loops_step(tmp_path):
    """Lightning's floor is measured on the plain loop's own step: the same model, loss and
    optimiser, which it really trains (its weights move, its loss falls)."""
    register_configs()
    cfg = bench.compose_case(CASES[2], 40, tmp_path)
    domains = build_domains(cfg)
    parts = bench_loops.plain_parts(cfg, domains, 40, adversarial=False)
    before = [p.detach().clone() for p in parts.module.parameters()]
    first = parts.loss(parts.draw(), 0).item()
    trainer = bench_loops.pl.Trainer(
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    loader = bench_loops.DataLoader(bench_loops.DrawnBatches(parts.draw, 40), batch_size=None)
    trainer.fit(bench_loops.BareModule(parts), train_dataloaders=loader)
    assert trainer.global_step == 40
    assert any(
        not torch.equal(a, b) for a, b in zip(before, parts.module.parameters(), strict=True)
    )
    parts.module.eval()
    with torch.no_grad():
        assert parts.loss(parts.draw(), 40).item() < first


def test_both_sides_follow_the_composed_config(monkeypatch):
    """With performance.channels_last both loops feed NHWC batches, of the config's size."""
    seen = []

    def recording_build_module(*args, **kwargs):
        module = build_module(*args, **kwargs)

        def record(backbone, inputs):
            if backbone.training:  # training batches, not tlframe's validation
                seen.append(inputs[0])

        module.model.backbone.register_forward_pre_hook(record)
        return module

    for module in (bench, bench_loops):
        monkeypatch.setattr(module, "build_module", recording_build_module)
    overrides = ("performance.channels_last=true", "data.batch_size=32")
    color = ("source.channels=3", "target.channels=3")  # NHWC is a no-op for one channel
    table = run(steps=3, warmup=1, repeats=1, default_run=False, overrides=overrides + color)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "img/s" not in line]
    assert rows and all(row.rstrip(" |").endswith("batch 32, channels_last on") for row in rows)
    batches = [x for x in seen if x.dim() == 4]
    assert batches and all(x.shape[1] == 3 for x in batches)
    assert all(x.is_contiguous(memory_format=torch.channels_last) for x in batches)
    assert all(len(x) in (32, 64) for x in batches)  # 64: DANN's source + target


def test_a_new_report_keeps_the_hand_written_notes(tmp_path):
    report = tmp_path / "PERFORMANCE.md"
    report.write_text("# Performance\n\n| old table |\n\n## Notes\n\nwhy the figures are so\n")
    assert bench.kept_notes(report) == "\n## Notes\n\nwhy the figures are so\n"
    assert bench.kept_notes(tmp_path / "missing.md") == ""


def test_the_sweep_case_runs_its_jobs_two_at_once(tmp_path):
    """The serial side is Hydra's basic launcher, which every other sweep test runs."""
    tiny = (
        "method=source_only",
        "data.steps_per_epoch=2",
        "trainer.max_epochs=1",
        "source.num_train=200",
        "source.num_val=100",
        "source.num_test=100",
        "callbacks.feature_space=null",
    )
    assert bench.sweep_seconds(tmp_path, jobs=2, seeds=2, job=tiny) > 0
    assert len(list((tmp_path / "sweep_2").glob("*/metrics.json"))) == 2


def test_the_image_folder_case_measures_both_pipelines(tmp_path):
    """Tiny: 40 JPEGs of 32x32 (read whole, no crops), batches of 4, one worker."""
    ours, plain, ratio, settings = bench.image_folder_rates(
        tmp_path,
        images=40,
        size=32,
        steps=3,
        warmup=1,
        workers=1,
        overrides=("data.batch_size=4",),
        repeats=2,
    )
    assert ours > 0 and plain > 0 and ratio > 0
    assert "40 JPEGs of 32x32 px, 3x32x32 inputs, batch 4" in settings
    assert len(list((tmp_path / "images").rglob("*.jpg"))) == 40


def test_the_small_folder_case_measures_streamed_and_decoded(tmp_path):
    """Tiny: 40 grey PNGs, batches of 4; decoding really happened on one side only."""
    streamed, decoded, decoding, settings = bench.small_folder_rates(
        tmp_path, images=40, steps=3, warmup=1, repeats=1, size=28, workers=1,
        overrides=("data.batch_size=4",),
    )  # fmt: skip
    assert streamed > 0 and decoded > 0
    assert "40 grey 28x28 PNGs, batch 4" in settings
    assert len(list((tmp_path / "images").rglob("*.png"))) == 40


# The gpu preset's code path at lenet size on the CPU: its cases and settings, smaller inputs.
TINY_GPU = (
    "backbone=lenet",
    "source.image_size=28",
    "target.image_size=28",
    "data.batch_size=8",
)


def test_the_gpu_preset_trains_both_sides_in_bf16_nhwc_with_the_compiled_backbone(monkeypatch):
    """Every side of the gpu preset (tlframe, the plain loop, the plain image-folder loop)
    trains under bf16 autocast on NHWC batches with the backbone the shared builder
    compiled, times with the device synchronised, and the report names the preset and its
    settings. torch.compile's inductor would take tens of seconds per case on 2 CPU cores,
    so ``Module.compile`` is replaced by a recorder: the test checks that the backbone each
    side trains is one ``build_module`` asked to compile (in place, as on a GPU)."""
    compiled, seen, synced, resets, runs = [], [], [], [], []
    side = [""]
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, *a, **k: compiled.append(self))
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(side[0]))
    for module in (bench, bench_loops):
        monkeypatch.setattr(module, "synchronize", lambda d: synced.append((side[0], d)))
    for name in ("tlframe_rate", "plain_rate", "bare_lightning_rate", "plain_folder_rate"):

        def on_side(*args, _name=name, _measure=getattr(bench, name), **kwargs):
            side[0] = _name
            runs.append(_name)
            return _measure(*args, **kwargs)

        monkeypatch.setattr(bench, name, on_side)

    def recording_build_module(*args, **kwargs):
        module = build_module(*args, **kwargs)
        backbone = module.model.backbone
        conv = next(m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d))

        def record(conv, inputs, output):
            if backbone.training:  # training batches, not tlframe's validation
                nhwc = inputs[0].is_contiguous(memory_format=torch.channels_last)
                is_compiled = any(backbone is done for done in compiled)
                seen.append((side[0], is_compiled, nhwc, inputs[0].shape[1], output.dtype))

        conv.register_forward_hook(record)
        return module

    for module in (bench, bench_loops):
        monkeypatch.setattr(module, "build_module", recording_build_module)
    folder = replace(bench.GPU.folder, size=32, steps=3, warmup=1, workers=1, repeats=1)
    table = run(
        steps=3,
        warmup=1,
        repeats=1,
        default_run=False,
        overrides=TINY_GPU,
        image_folder_images=40,
        preset=replace(bench.GPU, folder=folder),
    )
    sides = {"tlframe_rate", "plain_rate", "bare_lightning_rate", "plain_folder_rate"}
    assert {entry[0] for entry in seen} == sides
    assert all(entry[1:] == (True, True, 3, torch.bfloat16) for entry in seen), seen
    assert sorted(synced) == sorted((name, torch.device("cpu")) for name in runs * 2)  # start, end
    assert len(resets) == len(bench.GPU_CASES) + 1  # each case compiles for its own shapes
    assert "with the `gpu` preset on " in table
    assert " ".join(bench.GPU.overrides) in table and " ".join(TINY_GPU) in table
    rows = [line for line in table.splitlines() if line.startswith("| ") and "img/s" not in line]
    assert [row.split("|")[1].strip() for row in rows] == [c.name for c in bench.GPU_CASES]
    settings = "batch 8, channels_last on, compile on, bf16-mixed"
    assert all(row.rstrip(" |").endswith(settings) for row in rows)
    assert "source_only / lenet (JPEG image folder), random init, training (40 JPEGs" in table
    assert f"3x28x28 inputs, {settings}, 1 workers" in table


# Lightning runs 16-mixed as bf16-mixed on a CPU (fp16 AMP is for GPUs); the plain loops too.
FP16 = torch.float16 if torch.cuda.is_available() else torch.bfloat16


@pytest.mark.parametrize(
    ("precision", "dtype"),
    [("32-true", torch.float32), ("bf16-mixed", torch.bfloat16), ("16-mixed", FP16)],
)
def test_the_plain_loops_take_lightnings_device_and_precision(precision, dtype):
    """The device and autocast dtype are the Trainer's; the GradScaler is on only for fp16."""
    trainer = OmegaConf.create(
        {"_target_": "pytorch_lightning.Trainer", "accelerator": "auto", "precision": precision}
    )
    placement = lightning_placement(trainer)
    device = placement.device
    assert device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with placement.autocast():
        out = torch.nn.Linear(4, 4).to(device)(torch.ones(2, 4, device=device))
    assert out.dtype == dtype
    assert placement.grad_scaler().is_enabled() is (dtype is torch.float16)


def test_the_plain_loops_refuse_a_precision_they_do_not_reproduce():
    trainer = OmegaConf.create({"_target_": "pytorch_lightning.Trainer", "precision": "bf16-true"})
    with pytest.raises(ValueError, match="not bf16-true"):
        lightning_placement(trainer)


def test_the_command_line_takes_the_presets_settings_and_keeps_the_notes(monkeypatch, tmp_path):
    """`make bench-gpu`'s command: the gpu preset's steps and cases, the CPU-only timings
    off unless asked for, and a report of its own whose hand-written notes are kept."""
    calls = []
    monkeypatch.setattr(bench, "run", lambda *args, **kwargs: calls.append((args, kwargs)) or "T\n")
    report = tmp_path / "PERFORMANCE_GPU.md"
    report.write_text("# old\n\n## Notes\n\nby hand\n")
    bench.main(["--preset", "gpu", "--output", str(report), "--sweep", "seed=1"])
    bench.main(["--no-image-folder", "--steps", "5"])
    (gpu_args, gpu_kwargs), (cpu_args, cpu_kwargs) = calls
    assert gpu_args == (150, 25, 3, False, ("seed=1",)) and gpu_kwargs["preset"] is bench.GPU
    assert gpu_kwargs["sweep"] and gpu_kwargs["feature_cache"]
    assert gpu_kwargs["image_folder_images"] == 6400
    assert cpu_args == (5, 20, 7, True, ()) and cpu_kwargs["preset"] is bench.CPU
    assert cpu_kwargs["image_folder_images"] == 0
    assert report.read_text() == "T\n\n## Notes\n\nby hand\n"
