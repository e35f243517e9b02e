"""``python -m tlframe.tools.bench``: tlframe's training throughput against a plain PyTorch loop.

Both sides train the same model (built by the same builders) on the same in-memory data
with the same optimiser, schedule and losses for the same number of steps, in one process;
tlframe runs through its Trainer, CombinedLoader, logging and default callbacks. The
median over repeats of images/s and of the ratio tlframe/plain is reported, with the
process's peak memory and the wall time of the default ``tlframe-train`` run (cold and
warm data cache), of a small sweep, and of a head trained on frozen features computed once
against the backbone recomputed at every step; and resnet18 trained on a generated folder of
JPEGs streamed through ``image_folder`` against torchvision's ImageFolder and DataLoader.
``--output`` writes the markdown table (e.g. to docs/PERFORMANCE.md).

Two presets (``--preset``). ``cpu``, the default, is the above (``make bench``). ``gpu``
(``make bench-gpu``, docs/PERFORMANCE_GPU.md) is for an accelerator: source_only and DANN
with resnet50 on the digit domains rendered at 3x224x224, and resnet50 on the JPEG folder,
all with batches of 128 per domain, ``trainer.precision=bf16-mixed``,
``performance.channels_last=true`` and ``performance.compile=true``; the plain loops run on
the device and in the precision Lightning picks for the same trainer settings
(``bench_device``). It skips the default-run and sweep timings, which measure the lenet
default and how a sweep shares CPU cores (``--default-run``, ``--sweep`` turn them on),
and keeps the feature-cache timing, with the command line's overrides only. On a machine
without CUDA it runs the same code on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from functools import partial
from itertools import islice
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from tlframe.config import config_dir, register_configs
from tlframe.data.datamodule import LOADER_KEYS, TransferDataModule
from tlframe.data.loaders import worker_count
from tlframe.engine.cache import StageCache
from tlframe.engine.module import to_channels_last
from tlframe.engine.stages import (
    build_callbacks,
    build_loggers,
    build_module,
    domain_infos,
    plan_stages,
    run_stage,
)
from tlframe.tools.bench_device import device_name, lightning_placement, synchronize
from tlframe.tools.bench_loops import (
    StepTimer,
    bare_lightning_rate,
    channels_last,
    plain_rate,
)
from tlframe.train import build_domains

NOTES_HEADING = "## Notes"  # from here on the report is written by hand and kept


@dataclass(frozen=True)
class Case:
    name: str
    overrides: tuple[str, ...]
    adversarial: bool


CASES = (
    Case("source_only / lenet (digits)", ("method=source_only",), False),
    Case("dann / lenet (digits)", ("method=dann",), True),
    Case(
        "source_only / mlp (784-d feature vectors)", ("method=source_only", "backbone=mlp"), False
    ),
)


# The gpu preset's in-memory cases: the digit domains as ImageNet-sized RGB images (fewer
# synth_digits than by default: 2,400 of them at 3x224x224 hold 1.4 GB as float32).
DIGITS_224 = (
    "source.image_size=224",
    "source.channels=3",
    "target.image_size=224",
    "target.channels=3",
    "source.num_train=2000",
    "source.num_val=200",
    "source.num_test=200",
)
GPU_CASES = (
    Case(
        "source_only / resnet50 (digits, 3x224x224)",
        ("method=source_only", "backbone=resnet50", *DIGITS_224),
        False,
    ),
    Case(
        "dann / resnet50 (digits, 3x224x224)",
        ("method=dann", "backbone=resnet50", *DIGITS_224),
        True,
    ),
)


@dataclass(frozen=True)
class FolderSettings:
    """The image-folder case's size (``image_folder_rates``'s arguments)."""

    size: int = 256
    steps: int = 8
    warmup: int = 2
    workers: int = 2
    backbone: str = "resnet18"
    repeats: int = 3
    overrides: tuple[str, ...] = ()  # its own, after the preset's


@dataclass(frozen=True)
class Preset:
    """What one ``--preset`` measures, with which settings, and how its report opens."""

    name: str
    intro: tuple[str, ...]  # the report's first lines, rewritten by every measurement
    cases: tuple[Case, ...]
    overrides: tuple[str, ...]  # every case's (the image folder's too), before the command line's
    steps: int
    warmup: int
    repeats: int
    images: int  # JPEGs generated for the image-folder case
    folder: FolderSettings
    default_run: bool
    sweep: bool
    feature_cache: bool
    small_folder: bool  # lenet on small grey PNGs, streamed vs decoded once (with the folder's)


CPU = Preset(
    name="cpu",
    intro=(
        "# Performance",
        "",
        "Written by `make bench` (`python -m tlframe.tools.bench --output docs/PERFORMANCE.md`):",
        "training throughput through tlframe (Trainer, CombinedLoader, logging and the default",
        "callbacks) against the same model, data, optimiser and losses in a plain PyTorch",
        "loop, side by side in one process. Images/s counts source and target images.",
    ),
    cases=CASES,
    overrides=(),
    steps=200,
    warmup=20,
    repeats=7,
    images=2000,
    folder=FolderSettings(),
    default_run=True,
    sweep=True,
    feature_cache=True,
    small_folder=True,
)
GPU = Preset(
    name="gpu",
    intro=(
        "# Performance on a GPU",
        "",
        "Written by `make bench-gpu` (`python -m tlframe.tools.bench --preset gpu --output",
        "docs/PERFORMANCE_GPU.md`): resnet50 trained on 224x224 RGB images with bf16 autocast,",
        "NHWC and a compiled backbone through tlframe (Trainer, CombinedLoader, logging and the",
        "default callbacks) against the same model, data, optimiser, losses and settings in a",
        "plain PyTorch loop on the same device, side by side in one process. Images/s counts",
        "source and target images. The CPU figures are in docs/PERFORMANCE.md.",
    ),
    cases=GPU_CASES,
    overrides=(
        "data.batch_size=128",
        "trainer.precision=bf16-mixed",
        "performance.channels_last=true",
        "performance.compile=true",
    ),
    steps=150,
    warmup=25,  # the first step compiles the backbone
    repeats=3,
    images=6400,
    folder=FolderSettings(
        steps=60, warmup=10, workers=12, backbone="resnet50", overrides=("data.pin_memory=true",)
    ),
    default_run=False,
    sweep=False,
    feature_cache=True,
    small_folder=False,
)
PRESETS = {preset.name: preset for preset in (CPU, GPU)}


def compose_case(case: Case, steps: int, root: Path, extra: tuple[str, ...] = ()):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                *case.overrides,
                *extra,
                f"data.steps_per_epoch={steps}",
                "trainer.max_epochs=1",
                "cache_stages=false",
                "callbacks.feature_space=null",  # acts after testing, not while training
                f"paths.output_dir={root / 'run'}",
                f"paths.cache_dir={root / 'cache'}",
            ],
        )


def tlframe_rate(cfg, domains, steps: int, warmup: int) -> float:
    """Images per second through tlframe (source + target images per step for DANN)."""
    spec = plan_stages(cfg)[0]
    module = build_module(cfg, spec, domain_infos(domains), None)
    timer = StepTimer(warmup, steps)
    loggers = build_loggers(cfg, spec.name)
    checkpoints = Path(cfg.paths.output_dir) / "checkpoints"
    callbacks = [*build_callbacks(spec, cfg, checkpoints, loggers), timer]
    trainer = instantiate(spec.trainer, callbacks=callbacks, logger=loggers)
    datamodule = TransferDataModule(domains, spec.train_on, **OmegaConf.to_container(cfg.data))
    trainer.fit(module, datamodule=datamodule)
    images = (steps - warmup) * cfg.data.batch_size * len(spec.train_on)
    return images / timer.seconds


def case_settings(cfg) -> str:
    """The settings column: batch and NHWC always, the compiled backbone and the precision
    when they are not the defaults."""
    nhwc = "on" if channels_last(cfg) else "off"
    settings = f"batch {cfg.data.batch_size}, channels_last {nhwc}"
    if (cfg.get("performance") or {}).get("compile"):
        settings += ", compile on"
    if str(cfg.trainer.precision) != "32-true":
        settings += f", {cfg.trainer.precision}"
    return settings


def fresh_compile(cfg) -> None:
    """Each case compiles its backbone for its own batch shape, as a run of its own would:
    with a graph of an earlier case's batch size cached, dynamo would compile a
    dynamic-shape one."""
    if (cfg.get("performance") or {}).get("compile"):
        torch._dynamo.reset()


def default_run_seconds(root: Path) -> tuple[float, float, dict]:
    """Wall time of ``tlframe-train`` with no arguments: cold data cache, then warm, and the
    warm run's metrics.json (its per-stage timings and accuracy)."""
    root.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TLFRAME_ROOT=str(root))
    command = [
        sys.executable,
        "-m",
        "tlframe.train",
        "cache_stages=false",
        "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
    ]
    times = []
    for _ in range(2):
        start = time.perf_counter()
        subprocess.run(command, cwd=root, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    newest = max(root.rglob("metrics.json"), key=lambda path: path.stat().st_mtime)
    return times[0], times[1], json.loads(newest.read_text())


SWEEP_JOB = ("method=source_only", "data.steps_per_epoch=50", "trainer.max_epochs=2")


def sweep_seconds(root: Path, jobs: int, seeds: int = 4, job: tuple[str, ...] = SWEEP_JOB) -> float:
    """Wall time of a ``seeds``-job sweep of short runs, one job at a time (Hydra's basic
    launcher) or ``jobs`` at once (joblib, each job on its share of the cores)."""
    root.mkdir(parents=True, exist_ok=True)
    launcher = ["hydra/launcher=joblib", f"hydra.launcher.n_jobs={jobs}"] if jobs > 1 else []
    command = [
        sys.executable,
        "-m",
        "tlframe.train",
        "-m",
        *launcher,
        *job,
        f"seed={','.join(map(str, range(seeds)))}",
        "cache_stages=false",
        "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
        f"hydra.sweep.dir={root / f'sweep_{jobs}'}",
    ]
    env = dict(os.environ, TLFRAME_ROOT=str(root))
    start = time.perf_counter()
    subprocess.run(command, cwd=root, env=env, check=True, capture_output=True)
    return time.perf_counter() - start


FEATURE_CACHE_JOB = Case(
    "head on frozen lenet features",
    ("method=layer_transfer", "method.layers=4", "data.target_labels=10"),  # every block frozen
    False,
)


def feature_cache_seconds(
    root: Path, steps: int, overrides: tuple[str, ...] = ()
) -> tuple[float, float]:
    """Fit seconds of the same target stage (a new head on the frozen source lenet, same
    seed, same ``steps``) on features computed once, their computation included, and with
    the backbone recomputed at every step (``performance.feature_cache=false``)."""
    one_step = ("++stages.source.trainer.max_steps=1",)  # the source model's quality is moot
    cfg = compose_case(FEATURE_CACHE_JOB, steps, root, (*one_step, *overrides))
    domains = build_domains(cfg)
    source_spec, target_spec = plan_stages(cfg)
    off = StageCache(root / "cache", enabled=False)  # neither stage nor features from disk
    source = run_stage(cfg, source_spec, domains, None, root / "run", off)
    seconds = {}
    for mode in ("auto", False):
        cfg.performance.feature_cache = mode
        pl.seed_everything(0, verbose=False)
        result = run_stage(cfg, target_spec, domains, source.module.parts(), root / "run", off)
        seconds[mode] = result.fit_seconds
    return seconds["auto"], seconds[False]


IMAGE_FOLDER_CASE = Case(
    "source_only / {backbone} (JPEG image folder)",
    (
        "method=source_only",
        "data.batch_size=32",
        "++trainer.limit_val_batches=0",  # the timed steps are training's
        "callbacks.model_checkpoint=null",  # nothing validated to select on
    ),
    False,
)


def make_image_folder(
    root: Path, images: int, size: int, classes: int = 10, grey: bool = False
) -> Path:
    """``images`` JPEGs (grey: PNGs) of ``size`` pixels a side in ``classes`` class folders:
    smooth random fields with noise, which decode like photos (pure noise would not
    compress)."""
    rng = np.random.default_rng(0)
    channels = () if grey else (3,)
    for i in range(images):
        folder = root / f"class_{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        coarse = Image.fromarray(rng.integers(0, 256, (8, 8, *channels), dtype=np.uint8))
        field = np.asarray(coarse.resize((size, size), Image.BILINEAR), dtype=np.float32)
        image = Image.fromarray(
            (field + rng.normal(0, 12, field.shape)).clip(0, 255).astype(np.uint8)
        )
        if grey:
            image.save(folder / f"{i}.png")
        else:
            image.save(folder / f"{i}.jpg", quality=90)
    return root


def plain_folder_rate(cfg, domains, folder: Path, steps: int, warmup: int) -> float:
    """The training loop a researcher would write over ``DataLoader(ImageFolder(folder))``,
    with tlframe's own training transforms and loader settings (workers, pinning), on the
    device and in the precision Lightning picks (as ``plain_rate``), so the two sides differ
    only in what tlframe adds."""
    spec = plan_stages(cfg)[0]
    placement = lightning_placement(spec.trainer)
    device = placement.device
    module = build_module(cfg, spec, domain_infos(domains), None).to(device)
    model = torch.nn.Sequential(module.model.backbone, module.model.head).train()
    optimizer = instantiate(spec.optimizer)(params=list(module.parameters()))
    scheduler = instantiate(spec.scheduler)(optimizer=optimizer, total_steps=steps)
    scaler = placement.grad_scaler()
    dataset = ImageFolder(str(folder), transform=domains["source"].train.transform)
    loader_options = {key: cfg.data[key] for key in LOADER_KEYS}
    loader_options["num_workers"] = worker_count(loader_options["num_workers"])
    loader = DataLoader(
        dataset, cfg.data.batch_size, shuffle=True, drop_last=True, **loader_options
    )
    nhwc = channels_last(cfg)

    def batches():
        while True:  # epochs of a small folder follow one another
            yield from loader

    start = 0.0
    for step, (x, y) in enumerate(islice(batches(), steps)):
        if step == warmup:
            synchronize(device)
            start = time.perf_counter()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with placement.autocast():
            loss = F.cross_entropy(model(to_channels_last(x) if nhwc else x), y)
        optimizer.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
    synchronize(device)
    return (steps - warmup) * cfg.data.batch_size / (time.perf_counter() - start)


def image_folder_rates(
    root: Path,
    images: int = 2000,
    size: int = 256,
    steps: int = 8,
    warmup: int = 2,
    workers: int = 2,
    backbone: str = "resnet18",
    overrides: tuple[str, ...] = (),
    repeats: int = 3,
) -> tuple[float, float, float, str]:
    """Median images/s of ``IMAGE_FOLDER_CASE`` through tlframe and through the plain loop,
    and the median of their ratio over ``repeats`` (which side runs first alternating: the
    second side's loader started behind the first's), on a folder of ``images`` JPEGs
    generated under ``root`` (read from the page cache, as a second epoch would be), and
    the settings, for the report. The defaults take about two minutes on 2 cores, most of
    it resnet18's training steps at 224 pixels. ``overrides`` come last: they may change
    the backbone or the workers too."""
    folder = make_image_folder(root / "images", images, size)
    domain = folder_domain(folder, "decode=false")  # streamed, as ImageFolder reads it
    # workers end with each side's loader: lingering ones slowed the side measured second
    extra = (f"backbone={backbone}", *domain, f"data.num_workers={workers}", *overrides)
    cfg = compose_case(IMAGE_FOLDER_CASE, steps, root, extra)
    domains = build_domains(cfg)
    fresh_compile(cfg)
    ours, plain = [], []
    sides = [(ours, tlframe_rate), (plain, partial(plain_folder_rate, folder=folder))]
    for repeat in range(repeats):
        for rates, measure in sides if repeat % 2 == 0 else sides[::-1]:
            pl.seed_everything(0, verbose=False)
            rates.append(measure(cfg, domains, steps=steps, warmup=warmup))
    ratio = statistics.median(a / b for a, b in zip(ours, plain, strict=True))
    shape = "x".join(map(str, domains["source"].input_shape))
    settings = (
        f"{images} JPEGs of {size}x{size} px, {shape} inputs, {case_settings(cfg)}, "
        f"{cfg.data.num_workers} workers, {steps - warmup} timed steps after {warmup}, median of "
        f"{repeats} repeats with the first side alternating"
    )
    return statistics.median(ours), statistics.median(plain), ratio, settings


def folder_domain(folder: Path, *options: str) -> tuple[str, ...]:
    """Overrides reading ``folder`` as the source and the target (one domain, built once),
    with ``options`` for both."""
    return tuple(
        override
        for role in ("source", "target")
        for override in (f"{role}=image_folder", f"{role}.root={folder}")
        + tuple(f"{role}.{option}" for option in options)
    )


def small_folder_rates(
    root: Path,
    images: int,
    steps: int,
    warmup: int,
    repeats: int,
    size: int = 28,
    workers: int = 2,
    overrides: tuple[str, ...] = (),
) -> tuple[float, float, float, str]:
    """Median images/s of lenet source_only on a generated folder of ``images`` grey PNGs
    of ``size`` pixels (the small-image recipe: whole images, no random crops) streamed
    from disk by ``workers`` DataLoader workers (``decode=false``) and decoded once into
    memory (``decode=auto``, the default), which side runs first alternating; the seconds
    decoding took; the settings, for the report."""
    folder = make_image_folder(root / "images", images, size, grey=True)
    case = Case("", ("method=source_only", "backbone=lenet"), False)
    configs = {
        decode: compose_case(
            case,
            steps,
            root,
            (*folder_domain(folder, f"decode={decode}"), f"data.num_workers={workers}", *overrides),
        )
        for decode in ("false", "auto")
    }
    built = {}
    for decode, cfg in configs.items():
        start = time.perf_counter()
        built[decode] = (build_domains(cfg), time.perf_counter() - start)
    decoding = built["auto"][1] - built["false"][1]
    rates: dict[str, list[float]] = {"false": [], "auto": []}
    for repeat in range(repeats):
        for decode in ("false", "auto") if repeat % 2 == 0 else ("auto", "false"):
            pl.seed_everything(0, verbose=False)
            rates[decode].append(
                tlframe_rate(configs[decode], built[decode][0], steps=steps, warmup=warmup)
            )
    streamed, decoded = (statistics.median(rates[d]) for d in ("false", "auto"))
    settings = (
        f"{images} grey {size}x{size} PNGs, {case_settings(configs['auto'])}, {steps - warmup} "
        f"timed steps after {warmup}, median of {repeats} repeats with the first side alternating"
    )
    return streamed, decoded, decoding, settings


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def chosen(group: str, overrides: tuple[str, ...]) -> str:
    """The option the last of ``overrides`` naming config ``group`` picks (``backbone=...``)."""
    return [o.split("=", 1)[1] for o in overrides if o.startswith(f"{group}=")][-1]


def measure_case(
    case: Case, steps: int, warmup: int, repeats: int, root: Path, overrides: tuple[str, ...]
) -> tuple:
    """One row of the table: tlframe's, the plain loop's and the bare Lightning module's
    median images/s, the median tlframe/plain ratio and its range, the median bare/plain
    ratio (Lightning's floor), the peak memory so far and the case's settings."""
    cfg = compose_case(case, steps, root, overrides)
    domains = build_domains(cfg)
    fresh_compile(cfg)
    ours, plain, bare = [], [], []
    sides = [
        (ours, partial(tlframe_rate, cfg, domains, steps, warmup)),
        (plain, partial(plain_rate, cfg, domains, steps, warmup, case.adversarial)),
        (bare, partial(bare_lightning_rate, cfg, domains, steps, warmup, case.adversarial)),
    ]
    for repeat in range(repeats):
        # rotate which side goes first: none gains from running after another
        for rates, measure in sides[repeat % 3 :] + sides[: repeat % 3]:
            pl.seed_everything(0, verbose=False)
            rates.append(measure())
    ratios = [a / b for a, b in zip(ours, plain, strict=True)]
    floors = [a / b for a, b in zip(bare, plain, strict=True)]
    print(f"{case.name}: ratio {statistics.median(ratios):.3f}", file=sys.stderr)
    return (
        case.name,
        statistics.median(ours),
        statistics.median(plain),
        statistics.median(ratios),
        min(ratios),
        max(ratios),
        statistics.median(bare),
        statistics.median(floors),
        peak_memory_mb(),
        case_settings(cfg),
    )


def measured_line(
    preset: Preset,
    device: torch.device,
    steps: int,
    warmup: int,
    repeats: int,
    overrides: tuple[str, ...],
    load_before: float,
) -> str:
    """Where, when and with which settings the table was measured."""
    line = (
        f"Measured {time.strftime('%Y-%m-%d')} with the `{preset.name}` preset on "
        f"{device_name(device)}, {os.cpu_count()} CPU cores, torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads, Python {platform.python_version()}; "
        f"{steps} steps per run ({warmup} warm-up steps not timed), median of {repeats} "
        "repeats, which side runs first alternating between repeats. Both sides use the "
        "composed config's settings (batch per domain, NHWC, precision, compiled backbone) "
        "on the device Lightning picks for them. "
    )
    if preset.overrides:
        line += f"The preset's overrides: `{' '.join(preset.overrides)}`. "
    if overrides:
        line += f"From the command line: `{' '.join(overrides)}`. "
    return line + (
        f"Load average (1 min) {load_before:.1f} before and {os.getloadavg()[0]:.1f} after "
        f"the cases on {os.cpu_count()} cores (the benchmark itself adds about 1; more means "
        "other processes shared the machine)."
    )


def run(
    steps: int,
    warmup: int,
    repeats: int,
    default_run: bool,
    overrides: tuple[str, ...] = (),
    sweep: bool = False,
    feature_cache: bool = False,
    image_folder_images: int = 0,
    preset: Preset = CPU,
) -> str:
    register_configs()
    root = Path(tempfile.mkdtemp(prefix="tlframe-bench-"))
    os.environ.setdefault("TLFRAME_DATA_DIR", str(root / "data"))
    load_before = os.getloadavg()[0]
    settings = (*preset.overrides, *overrides)
    first = compose_case(preset.cases[0], steps, root, settings)
    device = lightning_placement(plan_stages(first)[0].trainer).device
    if preset.name == "gpu" and device.type != "cuda":
        print(f"no CUDA device: the gpu preset runs on the {device.type}", file=sys.stderr)
    rows = [measure_case(case, steps, warmup, repeats, root, settings) for case in preset.cases]
    lines = [
        *preset.intro,
        "",
        measured_line(preset, device, steps, warmup, repeats, overrides, load_before),
        "",
        "| case | tlframe img/s | plain loop img/s | ratio (median) | ratio range | "
        "bare Lightning img/s | bare / plain (Lightning's floor) | peak RSS so far (MB) | "
        "settings |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, ours, plain, ratio, low, high, bare, floor, memory, case_setting in rows:
        lines.append(
            f"| {name} | {ours:.0f} | {plain:.0f} | {ratio:.3f} | {low:.3f}-{high:.3f} | "
            f"{bare:.0f} | {floor:.3f} | {memory:.0f} | {case_setting} |"
        )
    if default_run:
        cold, warm, record = default_run_seconds(root / "default")
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in record["timings"].items())
        lines += [
            "",
            f"Default `tlframe-train` (dann, synth_digits -> hand_digits, 1000 steps): "
            f"{cold:.1f} s with the data cache cold (data built), {warm:.1f} s warm "
            f"(process start to exit). The warm run's metrics.json: {stages}; "
            f"test/target/acc {record['metrics'].get('test/target/acc', float('nan')):.3f}.",
        ]
    if sweep:
        one, two = (sweep_seconds(root / "sweep", jobs) for jobs in (1, 2))
        lines += [
            "",
            f"A sweep of 4 short jobs ({' '.join(SWEEP_JOB)}, seeds 0-3) on "
            f"{os.cpu_count()} cores: {one:.1f} s one job at a time, {two:.1f} s with "
            "`hydra/launcher=joblib hydra.launcher.n_jobs=2` (each job on its share of the "
            f"cores), {one / two:.2f}x.",
        ]
    if feature_cache:
        cached, recomputed = feature_cache_seconds(root / "feature_cache", steps, overrides)
        lines += [
            "",
            f"A head trained on frozen features ({' '.join(FEATURE_CACHE_JOB.overrides)}, "
            f"{steps} steps of the target stage, fit time): {recomputed:.2f} s running the "
            f"frozen lenet at every step (`performance.feature_cache=false`), {cached:.2f} s "
            "on features computed once (their computation included), "
            f"{recomputed / cached:.2f}x.",
        ]
    if image_folder_images:
        folder = preset.folder
        folder_overrides = (*preset.overrides, *folder.overrides, *overrides)
        ours, plain, ratio, folder_settings = image_folder_rates(
            root / "image_folder",
            image_folder_images,
            **{**asdict(folder), "overrides": folder_overrides},
        )
        backbone = chosen("backbone", (f"backbone={folder.backbone}", *folder_overrides))
        lines += [
            "",
            f"{IMAGE_FOLDER_CASE.name.format(backbone=backbone)}, random init, training "
            f"({folder_settings}): {ours:.1f} img/s through `source=image_folder`, "
            f"{plain:.1f} img/s through torchvision's `ImageFolder` + `DataLoader` with the "
            f"same transforms, workers, model and optimiser in a plain loop, ratio {ratio:.3f}.",
        ]
    if image_folder_images and preset.small_folder:
        workers = preset.folder.workers
        streamed, decoded, decoding, small_settings = small_folder_rates(
            root / "small_folder", image_folder_images, steps, warmup, preset.folder.repeats,
            workers=workers, overrides=(*preset.overrides, *overrides),
        )  # fmt: skip
        lines += [
            "",
            f"source_only / lenet on a folder of small grey images ({small_settings}): "
            f"{streamed:.0f} img/s streamed from disk by {workers} workers "
            f"(`decode=false`), {decoded:.0f} img/s decoded once into memory (`decode=auto`, "
            f"the default for images read without random crops; decoding took "
            f"{decoding:.1f} s), {decoded / streamed:.2f}x.",
        ]
    return "\n".join(lines) + "\n"


def given_or(value, default):
    """A command-line option's value, or the preset's when the option was not given."""
    return default if value is None else value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tlframe.tools.bench", description=__doc__)
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="cpu",
        help="cpu: lenet and mlp on the CPU (make bench); gpu: resnet50 at 224 px, bf16, "
        "NHWC, compiled (make bench-gpu). The options below default to the preset's",
    )
    parser.add_argument("--steps", type=int, help="steps per run (cpu 200, gpu 150)")
    parser.add_argument("--warmup", type=int, help="steps not timed (cpu 20, gpu 25)")
    parser.add_argument("--repeats", type=int, help="repeats per case (cpu 7, gpu 3)")
    parser.add_argument(
        "--default-run",
        action=argparse.BooleanOptionalAction,
        help="time the default tlframe-train run (cpu preset: on)",
    )
    parser.add_argument(
        "--sweep",
        action=argparse.BooleanOptionalAction,
        help="time a 4-job sweep, serial vs 2 at once (cpu preset: on)",
    )
    parser.add_argument(
        "--feature-cache",
        action=argparse.BooleanOptionalAction,
        help="time a head on frozen features, cached vs recomputed every step (both presets)",
    )
    parser.add_argument(
        "--image-folder",
        action=argparse.BooleanOptionalAction,
        help="time training on a generated JPEG folder, image_folder vs ImageFolder "
        "(both presets: resnet18 on cpu, resnet50 on gpu)",
    )
    parser.add_argument(
        "--image-folder-images",
        type=int,
        help="JPEGs (256x256) generated for the image-folder case (cpu 2000, gpu 6400)",
    )
    parser.add_argument("--output", type=Path, help="also write the table to this file")
    parser.add_argument(
        "overrides",
        nargs="*",
        help="Hydra overrides for every case, after the preset's, e.g. "
        "performance.channels_last=true data.batch_size=64 (both sides follow them)",
    )
    args = parser.parse_args(argv)
    preset = PRESETS[args.preset]
    table = run(
        given_or(args.steps, preset.steps),
        given_or(args.warmup, preset.warmup),
        given_or(args.repeats, preset.repeats),
        given_or(args.default_run, preset.default_run),
        tuple(args.overrides),
        sweep=given_or(args.sweep, preset.sweep),
        feature_cache=given_or(args.feature_cache, preset.feature_cache),
        image_folder_images=given_or(args.image_folder_images, preset.images)
        if given_or(args.image_folder, True)
        else 0,
        preset=preset,
    )
    print(table, end="")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(table + kept_notes(args.output))


def kept_notes(path: Path) -> str:
    """The hand-written part of an existing report (from ``NOTES_HEADING`` on), which a new
    measurement keeps: the analysis of the figures is not regenerated."""
    text = path.read_text() if path.is_file() else ""
    start = text.find(NOTES_HEADING)
    return "\n" + text[start:] if start >= 0 else ""


if __name__ == "__main__":
    main()
