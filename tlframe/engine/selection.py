"""Model selection: which validation figure picks a stage's checkpoint.

A stage selects only on labels its setting has. The setting of a run is what its method
trains on over all its stages (``labels.method_setting``): a domain whose labels it has in
full offers its validation split; a domain with k labels per class offers those k
examples and no more; an unlabeled domain offers its inputs.

``selection=auto`` therefore keeps:

- ``val/target/acc`` where the setting has every target label;
- the final weights of the fixed schedule (``last``) where it has k per class, as
  few-shot papers report them, or where it adapts to an unlabeled target, with the source
  or without it (adaptation ramps up over the schedule; source accuracy saturates early
  and would favour less adapted epochs);
- ``val/source/acc`` otherwise (a stage on the labeled source alone).

``holdout`` selects a k-shot stage on a seeded, stratified part of its k labeled examples
per class, held out of its training (``conf/train.yaml``: ``holdout``). ``im``, ``snd`` and
``dev`` are label-free target criteria (``tlframe.engine.label_free``). A validation figure that
reads labels the setting lacks is logged as ``val/<domain>/oracle_acc``; ``selection=oracle``
selects on it knowingly and is marked ``(oracle)`` wherever the selection is shown.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tlframe.data.labels import LabelRegime, parse_regime
from tlframe.errors import ConfigError


@dataclass(frozen=True)
class Selection:
    metric: str  # the logged key the checkpoint callback monitors
    mode: str  # "max" or "min"
    oracle: bool = False  # True when it reads labels the setting does not have

    @property
    def label(self) -> str:
        return f"{self.metric} (oracle)" if self.oracle else self.metric

    @property
    def role(self) -> str | None:
        """The domain whose validation split the metric reads (None for ``last``)."""
        return self.metric.split("/")[1] if self.metric.count("/") == 2 else None

    @property
    def holdout(self) -> bool:
        """Whether it reads examples held out of the stage's k labeled ones."""
        return self.metric.endswith("/holdout_acc")


@dataclass(frozen=True)
class Holdout:
    """``selection=holdout``: the fraction of the k labeled target examples per class held
    out of training to select the checkpoint, and whether the stage is then trained again
    on all k for the selected number of steps."""

    fraction: float = 0.5
    retrain: bool = True


def holdout_options(node: Mapping | None) -> Holdout:
    """The ``holdout`` block of the config, checked."""
    node = node or {}
    fraction, retrain = node.get("fraction", 0.5), node.get("retrain", True)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction < 1:
        raise ConfigError(
            f"holdout.fraction must lie strictly between 0 and 1, got {fraction!r}; "
            "e.g. holdout.fraction=0.5"
        )
    if not isinstance(retrain, bool):
        raise ConfigError(f"holdout.retrain must be true or false, got {retrain!r}")
    return Holdout(float(fraction), retrain)


# Label-free target criteria: name -> (metric, mode). tlframe.engine.label_free defines them.
LABEL_FREE = {
    "im": ("val/target/im", "max"),
    "snd": ("val/target/snd", "max"),
    "dev": ("val/target/dev", "min"),
}
NAMES = ("auto", "last", "source", "target", "holdout", "oracle", *LABEL_FREE)
LOWER_IS_BETTER = ("entropy", "loss", "dev")


def accuracy_metric(role: str, setting: Mapping[str, LabelRegime]) -> str:
    """The name under which ``role``'s validation accuracy is logged in ``setting``: named
    oracle unless the setting has every label of that domain."""
    return f"val/{role}/acc" if setting.get(role) == "all" else f"val/{role}/oracle_acc"


def resolve_selection(
    choice: str | None,
    train_on: Mapping[str, object],
    setting: Mapping[str, object] | None = None,
    transductive: bool = False,
) -> Selection:
    """Turn ``selection=<name or metric key>`` into what the checkpoint callback needs.

    ``train_on`` holds the stage's label regimes, ``setting`` the method's (every stage's;
    default: this stage's). ``transductive``: the examples that train are those tested
    (``data.protocol=transductive``), so only the final weights or a label-free criterion
    may select."""
    stage = {role: parse_regime(r) for role, r in train_on.items()}
    setting = {role: parse_regime(r) for role, r in (setting or train_on).items()}
    target = stage.get("target")
    choice = str(choice or "auto")
    if transductive:
        if choice == "auto":
            return Selection("step", "max")
        if choice not in ("last", *LABEL_FREE):
            raise ConfigError(
                f"selection={choice} reads labels of the examples data.protocol=transductive "
                "tests on; use selection=last (the default there), im, snd or dev"
            )
    if choice == "auto":
        if target == "all":
            choice = "target"
        elif isinstance(target, int) or target == "none":  # few labels, or adapting
            choice = "last"
        else:
            choice = "source" if setting.get("source") == "all" else "last"
    if choice == "last":  # Lightning's step counter: the latest checkpoint wins
        return Selection("step", "max")
    if choice in ("source", "target"):
        if setting.get(choice) != "all":
            raise ConfigError(
                f"selection={choice} reads {choice} validation labels this setting does not "
                f"have ({choice} labels: {setting.get(choice, 'none')}); use selection=last, "
                f"holdout, im, snd or dev, or selection=oracle to do it knowingly"
            )
        return Selection(f"val/{choice}/acc", "max")
    if choice == "oracle":
        metric = accuracy_metric("target", setting)
        return Selection(metric, "max", oracle=metric.endswith("oracle_acc"))
    if choice == "holdout":
        return _holdout(stage)
    if choice in LABEL_FREE:
        return Selection(*LABEL_FREE[choice])
    if choice.count("/") == 2 and choice.split("/")[0] == "val":
        return _explicit(choice, setting)
    raise ConfigError(f"unknown selection {choice!r}; use {', '.join(NAMES)} or a val/... metric")


def _holdout(stage: Mapping[str, LabelRegime]) -> Selection:
    """Validation on the labels the stage trains on: a held-out part of k per class, the
    validation split of a fully labeled domain (target first)."""
    target = stage.get("target")
    if isinstance(target, int):
        if target < 2:
            raise ConfigError(
                f"selection=holdout holds out part of the k labeled target examples per "
                f"class, but data.target_labels={target}; use selection=last (the default) "
                "or k >= 2"
            )
        return Selection("val/target/holdout_acc", "max")
    for role in ("target", "source") if target != "none" else ():
        if stage.get(role) == "all":
            return Selection(f"val/{role}/acc", "max")
    raise ConfigError(
        "selection=holdout needs labeled training examples to hold out, and this stage "
        f"trains on {dict(stage)}; use selection=last, im, snd or dev"
    )


def _explicit(metric: str, setting: Mapping[str, LabelRegime]) -> Selection:
    role, name = metric.split("/")[1:]
    if name == "acc" and setting.get(role) != "all":
        raise ConfigError(
            f"selection={metric} reads {role} validation labels this setting does not have; "
            "use selection=oracle to do it knowingly"
        )
    mode = "min" if name.endswith(LOWER_IS_BETTER) else "max"
    return Selection(metric, mode, oracle=name == "oracle_acc")
