"""Every option of every config group composes, and what it describes can be built."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import METHOD_DATA, SMALL_SOURCE
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tlframe.config import config_dir
from tlframe.data.domain import split_labels
from tlframe.engine.method import load_methods
from tlframe.engine.model import FeatureExtractor
from tlframe.engine.stages import build_module, domain_infos, plan_stages
from tlframe.errors import DataError
from tlframe.train import build_domains

CONF = config_dir()
# Groups whose options are composed as-is; source/target are links to domain/.
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("domain", "hydra"))
OPTIONS = [
    *[(group, f.stem) for group in GROUPS for f in sorted((CONF / group).glob("*.yaml"))],
    *[("method", name) for name in sorted(load_methods())],  # structured configs, no YAML
]
SMALL_DOMAINS = {
    "synth_digits": ["num_train=200", "num_val=50", "num_test=50"],
    "synth_digits_color": ["num_train=200", "num_val=50", "num_test=50"],
}
# Domains that read the user's files, and why. The tests' data folder holds none, so each
# must stop with a one-line DataError naming the override to set, never download or build.
USER_FILE_DOMAINS = {
    "mnist": "MNIST's idx files",
    "usps": "USPS's LIBSVM .bz2 files",
    "svhn": "SVHN's .mat files",
    "mnistm": "MNIST-M's release files (or MNIST, to build it)",
    "image_folder": "a folder of images named by root",
    "array_file": "a feature file named by path",
    **{f"office31_{d}": "Office-31 images" for d in ("amazon", "dslr", "webcam")},
    **{
        f"office_home_{d}": "Office-Home images"
        for d in ("art", "clipart", "product", "real_world")
    },
    "visda_synthetic": "VisDA-2017 images",
    "visda_real": "VisDA-2017 images",
    "xlsa17": "res101.mat and att_splits.mat in the folder named by root",
    "coil20": "COIL1_vs_COIL2.mat named by path",
}
# The mandatory location of the generic file domains, pointed at nothing.
LOCATIONS = {
    "image_folder": ["root=/nonexistent/images"],
    "array_file": ["path=/nonexistent.npz"],
    "xlsa17": ["root=/nonexistent/AWA2"],
}


def test_source_and_target_offer_every_domain():
    domains = sorted(f.stem for f in (CONF / "domain").glob("*.yaml"))
    assert domains == sorted(f.stem for f in (CONF / "source").glob("*.yaml"))
    assert domains == sorted(f.stem for f in (CONF / "target").glob("*.yaml"))


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_instantiates(make_cfg, group: str, option: str, tmp_path: Path):
    if group == "hparams_search":  # its sweeper is the optional Optuna plugin
        pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    cfg = make_cfg(f"{group}={option}")
    if group in ("source", "target") and option in USER_FILE_DOMAINS:
        cfg = make_cfg(f"{group}={option}", *[f"{group}.{o}" for o in LOCATIONS.get(option, [])])
        with pytest.raises(InstantiationException) as caught:
            instantiate(cfg[group])
        assert isinstance(caught.value.__cause__, DataError), caught.value
        assert f"{group}." in str(caught.value.__cause__)  # names the override to set
    elif group in ("source", "target"):
        small = [f"{group}.{o}" for o in SMALL_DOMAINS.get(option, [])]
        cfg = make_cfg(f"{group}={option}", *small)
        domain = instantiate(cfg[group])
        labels = set(split_labels(domain.train).tolist())
        assert len(labels) > 1 and labels <= set(range(domain.num_classes))
        x, _ = domain.train[[0, 1]]
        assert tuple(x.shape[1:]) == tuple(domain.input_shape)
    elif group == "backbone":
        net = instantiate(cfg.backbone)(input_shape=(3, 32, 32))
        assert net(torch.zeros(2, 3, 32, 32)).shape == (2, net.out_features)
    elif group == "head":
        assert instantiate(cfg.head)(in_features=8, num_classes=3)(torch.zeros(2, 8)).shape == (
            2,
            3,
        )
    elif group in ("optimizer", "scheduler"):
        optimizer = instantiate(cfg.optimizer)(params=[torch.nn.Parameter(torch.zeros(1))])
        assert optimizer.param_groups[0]["lr"] == cfg.optimizer.lr
        if group == "scheduler":  # constant is no schedule at all; the others decay
            assert (not cfg.scheduler) == (option == "constant")
        if group == "scheduler" and cfg.scheduler:
            scheduler = instantiate(cfg.scheduler)(optimizer=optimizer, total_steps=10)
            optimizer.step()
            scheduler.step()
            assert optimizer.param_groups[0]["lr"] < cfg.optimizer.lr
    elif group == "method":
        data = METHOD_DATA.get(option, SMALL_SOURCE)
        cfg = make_cfg(f"{group}={option}", *data, "data.target_labels=all")
        domains = build_domains(cfg)
        infos, inherited = domain_infos(domains), None
        for spec in plan_stages(cfg):  # each stage built on the previous one's parts
            module = build_module(cfg, spec, infos, inherited).eval()
            role = module.context.task_role
            x, _ = domains[role].train[[0, 1]]
            with torch.no_grad():  # a pretraining or clustering stage has features only
                is_extractor = isinstance(module.model, FeatureExtractor)
                model = module.model
                out = model.features(x, role) if is_extractor else model.logits(x, role)
            assert out.shape[0] == 2 and torch.isfinite(out).all(), spec.name
            inherited = module.parts()
    elif group in ("trainer", "callbacks", "logger"):
        node = cfg[group]
        if "_target_" in node:
            instantiate(node, **({"accelerator": "cpu"} if group == "trainer" else {}))
        else:
            for sub in node.values():
                if sub is not None:
                    instantiate(sub)
    else:  # data, paths, dataset, experiment, hparams_search: its settings are composed
        own = OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml"))
        for key in ("defaults", "hydra", *(("output_dir", "cache_dir") * (group == "paths"))):
            own.pop(key, None)  # Hydra's own, or set by make_cfg
        top_level = group in ("dataset", "experiment", "hparams_search")  # @package _global_
        composed = OmegaConf.to_container(cfg if top_level else cfg[group])
        assert contains(composed, own), f"{group}={option}: its settings did not reach the config"


def contains(whole: dict, part: dict) -> bool:
    """Whether every value of the nested ``part`` is in ``whole`` at the same place."""
    return all(
        key in whole and (contains(whole[key], v) if isinstance(v, dict) else whole[key] == v)
        for key, v in part.items()
    )
