"""backbone=timm: any timm model as ordered blocks, trained by the fine-tuning and adaptation
methods on inputs read as its own data configuration says; its weights from the Hugging Face
cache or a file, read weights-only, and a one-line stop without them. Tiny, randomly
initialised models and weight files written here: nothing is downloaded."""

from __future__ import annotations

import sys
from pathlib import Path

import huggingface_hub.constants as hub_constants
import pytest
import timm
import torch
from conftest import QUICK
from file_fixtures import write_image_tree
from test_safe_loading import planted

from tlframe import train as entrypoint
from tlframe.errors import ConfigError
from tlframe.models.backbones import timm as timm_backbone
from tlframe.train import build_domains

CNN = ("resnet10t", {"pretrained_cfg_overlay": {"input_size": [3, 32, 32]}})
VIT = ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 8, "depth": 2})
SHORT = [
    *QUICK,
    "data.steps_per_epoch=2",
    "data.batch_size=16",
    "source.num_train=200",
    "source.num_val=100",
    "source.num_test=100",
    "callbacks.progress_bar=null",
]


def overrides(name: str, model_args: dict) -> list[str]:
    """``backbone=timm`` with ``name`` built with ``model_args``, on the command line."""
    args = ["backbone=timm", f"backbone.name={name}"]
    for key, value in model_args.items():
        if isinstance(value, dict):
            args += [f"+backbone.model_args.{key}.{k}={v}" for k, v in value.items()]
        else:
            args.append(f"+backbone.model_args.{key}={value}")
    return [arg.replace(" ", "") for arg in args]


def model_data_config(name: str, model_args: dict) -> dict:
    """What timm itself resolves for the model so built (``img_size`` as timm's scripts
    pass it)."""
    model = timm.create_model(name, **model_args)
    size = {"img_size": model_args["img_size"]} if "img_size" in model_args else {}
    return timm.data.resolve_data_config(size, model=model)


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch) -> Path:
    """An empty Hugging Face and torch cache that no download can fill: the hub's offline
    mode (its constants are read when it is imported, so they are set too)."""
    cache = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.mark.parametrize("method", ["finetune", "dann"])
@pytest.mark.parametrize(("name", "model_args"), [CNN, VIT], ids=["cnn", "vit"])
def test_a_cnn_and_a_vit_train_on_their_own_data_configuration(
    make_cfg, caplog, name, model_args, method
):
    labels = ["data.target_labels=5", "method.tuning.epochs=1"] if method == "finetune" else []
    cfg = make_cfg(f"method={method}", *labels, *overrides(name, model_args), *SHORT)
    with caplog.at_level("INFO", logger="tlframe.data.pairing"):
        record = entrypoint.train(cfg)
    expected = model_data_config(name, model_args)
    shape = list(expected["input_size"])
    assert record["input_shapes"] == {"source": shape, "target": shape}
    for role in ("source", "target"):  # the grey digits, read as the model's RGB inputs
        assert cfg[role].mean == list(expected["mean"]) and cfg[role].std == list(expected["std"])
    assert f"timm {name}'s data configuration: input_size {tuple(shape)}" in caplog.text
    assert "applied to source synth_digits (channels, image_size, mean, std)" in caplog.text
    assert 0.0 <= record["metrics"]["test/target/acc"] <= 1.0


def saved_model(tmp_path: Path, name: str, model_args: dict, suffix: str = ".pth"):
    """A timm model with a planted weight, and its state dict saved as ``suffix``."""
    model = timm.create_model(name, **model_args).eval()
    first = next(model.parameters())
    with torch.no_grad():
        first.fill_(0.125)
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(model.state_dict(), path)
    else:
        torch.save(model.state_dict(), path)
    return model, path


@pytest.mark.parametrize(("name", "model_args"), [CNN, VIT], ids=["cnn", "vit"])
def test_the_blocks_compose_to_the_models_own_features(tmp_path, name, model_args):
    model, path = saved_model(tmp_path, name, model_args)
    backbone = timm_backbone(
        (3, 32, 32), name=name, checkpoint_path=str(path), model_args=model_args
    ).eval()
    names = list(backbone.blocks._modules)
    assert len(names) > 2 and names[-1] == "pool", names
    assert names[0] == ("embed" if name == VIT[0] else "stem")
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        features = model.forward_head(model.forward_features(x), pre_logits=True)
        assert torch.allclose(backbone(x), features, atol=1e-5)
        # layer transfer's unit: the first n blocks, then the rest, are the same function
        inner = backbone.blocks[2:](backbone.blocks[:2](x))
    assert torch.allclose(inner, features, atol=1e-5)
    assert backbone.out_features == features.shape[1]


def test_a_model_whose_forward_does_not_split_is_one_block(caplog):
    args = {"img_size": 28, "depth": 2}  # EVA's blocks take rotary position embeddings
    with caplog.at_level("INFO", logger="tlframe.models.backbones"):
        backbone = timm_backbone((3, 28, 28), name="eva02_tiny_patch14_224", model_args=args)
    assert list(backbone.blocks._modules) == ["model"]
    assert "timm eva02_tiny_patch14_224 is one block" in caplog.text
    assert backbone.eval()(torch.randn(2, 3, 28, 28)).shape == (2, backbone.out_features)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_a_planted_weights_file_is_loaded(tmp_path, suffix):
    name, model_args = CNN
    _, path = saved_model(tmp_path, name, model_args, suffix)
    backbone = timm_backbone((3, 32, 32), name=name, checkpoint_path=str(path))
    assert torch.all(next(backbone.parameters()) == 0.125)


def test_weights_planted_in_the_hugging_face_cache_are_loaded(tmp_path, offline_hub):
    name, model_args = CNN
    repo = timm.models.get_pretrained_cfg(name).hf_hub_id  # timm/resnet10t.c3_in1k
    folder = offline_hub / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    snapshot = folder / "snapshots" / commit
    snapshot.mkdir(parents=True)
    _, path = saved_model(tmp_path, name, model_args, ".safetensors")
    path.rename(snapshot / "model.safetensors")
    backbone = timm_backbone((3, 32, 32), name=name, pretrained=True, model_args=model_args)
    assert torch.all(next(backbone.parameters()) == 0.125)


def test_a_weights_file_holding_a_pickled_object_is_refused(tmp_path):
    marker = tmp_path / "ran"
    path = planted(tmp_path / "weights.pth", marker)
    with pytest.raises(ConfigError, match=r"refused the weights file .*weights\.pth") as err:
        timm_backbone((3, 32, 32), name=CNN[0], checkpoint_path=str(path))
    assert "\n" not in str(err.value) and not marker.exists()


def test_pretrained_without_weights_stops_at_once_naming_the_file(
    make_cfg, offline_hub, monkeypatch
):
    def no_data(cfg):
        raise AssertionError("the data was built before the weights were checked")

    monkeypatch.setattr(entrypoint, "build_domains", no_data)
    cfg = make_cfg("backbone=timm", f"backbone.name={CNN[0]}", "backbone.pretrained=true")
    with pytest.raises(ConfigError) as err:
        entrypoint.train(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert "https://huggingface.co/timm/resnet10t.c3_in1k/resolve/main/model.safetensors" in message
    assert str(offline_hub) in message and "backbone.checkpoint_path=<file>" in message


def test_without_timm_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm fails
    with pytest.raises(ConfigError, match=r"pip install 'tlframe\[timm\]'"):
        timm_backbone((3, 32, 32), name=CNN[0])


def test_an_image_folder_takes_the_models_interpolation_crop_and_statistics(tmp_path, make_cfg):
    write_image_tree(tmp_path / "photos", {"cat": 6, "dog": 6}, size=20)
    folder = ["source=image_folder", f"source.root={tmp_path / 'photos'}", "target=image_folder"]
    folder += [f"target.root={tmp_path / 'photos'}", "source.std=[0.2,0.2,0.2]"]
    cfg = make_cfg(*folder, *overrides(*VIT))
    domains = build_domains(cfg)
    assert domains["source"].input_shape == (3, 32, 32)
    assert cfg.source.interpolation == "bicubic" and cfg.source.mean == [0.5, 0.5, 0.5]
    assert cfg.source.resize_size == 35  # floor(32 / crop_pct 0.9): timm's centre crop
    assert cfg.source.std == [0.2, 0.2, 0.2]  # set by hand: kept
