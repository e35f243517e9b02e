"""A checkpoint from elsewhere cannot run code: every loader refuses pickled objects."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from conftest import QUICK
from torch import nn

from tlframe.engine.cache import StageCache
from tlframe.engine.checkpoints import load_weights
from tlframe.engine.stages import run_stages
from tlframe.errors import ConfigError, DataError
from tlframe.io import safe_load
from tlframe.models.backbones import resnet
from tlframe.train import build_domains


class Payload:
    """Unpickling it (with full pickle) creates ``marker``: stands in for any code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def planted(path: Path, marker: Path, **entries) -> Path:
    """A checkpoint-looking file that also carries the payload."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"w": torch.zeros(2)}, "extra": Payload(marker), **entries}, path)
    return path


def test_the_payload_is_live_under_full_unpickling(tmp_path: Path):
    marker = tmp_path / "ran"
    torch.load(planted(tmp_path / "x.ckpt", marker), weights_only=False)
    assert marker.exists()  # so the refusals below are meaningful


def test_init_from_checkpoint_with_a_pickled_object_is_refused(tmp_path: Path):
    marker = tmp_path / "ran"
    path = planted(tmp_path / "x.ckpt", marker)
    with pytest.raises(pickle.UnpicklingError):
        safe_load(path)
    with pytest.raises(ConfigError, match="not a loadable weights-only checkpoint"):
        load_weights(nn.Linear(2, 1), path)
    assert not marker.exists()


def test_cached_stage_with_a_pickled_object_is_not_trusted(tmp_path: Path):
    marker = tmp_path / "ran"
    cache = StageCache(tmp_path / "cache")
    planted(cache.path("k"), marker, info={})
    assert cache.load("k") is None  # treated as missing: the stage is trained again
    assert not marker.exists()


def test_resume_from_a_last_checkpoint_with_a_pickled_object_is_refused(make_cfg, tmp_path):
    marker = tmp_path / "ran"
    cfg = make_cfg(*QUICK, "method=source_only", "source.num_train=200", "resume=true")
    run_dir = tmp_path / "run"
    planted(run_dir / "checkpoints" / "source" / "last.ckpt", marker)
    with pytest.raises(DataError, match=r"resume=true: refused .*last\.ckpt"):
        run_stages(cfg, build_domains(cfg), run_dir)
    assert not marker.exists()


def test_pretrained_weights_file_with_a_pickled_object_is_refused(tmp_path, monkeypatch):
    from torchvision.models import ResNet18_Weights

    marker = tmp_path / "ran"
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    name = Path(ResNet18_Weights.IMAGENET1K_V1.url).name
    planted(tmp_path / "torch" / "hub" / "checkpoints" / name, marker)
    with pytest.raises(ConfigError, match="refused the resnet18 weights file"):
        resnet((3, 32, 32), arch="resnet18", weights="IMAGENET1K_V1")
    assert not marker.exists()


def test_pretrained_weights_of_plain_tensors_still_load(tmp_path, monkeypatch):
    import torchvision
    from torchvision.models import ResNet18_Weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    state = torchvision.models.resnet18().state_dict()
    path = (
        tmp_path / "torch" / "hub" / "checkpoints" / Path(ResNet18_Weights.IMAGENET1K_V1.url).name
    )
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    backbone = resnet((3, 32, 32), arch="resnet18", weights="IMAGENET1K_V1")
    assert torch.equal(backbone.blocks.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])
