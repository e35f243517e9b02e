"""What a method is: its stages, each a model, objectives and an evaluator, and its options.

A method is one builder function in a module of ``tlframe.methods``, decorated with
``@method``. Its signature holds the method's options (``method.<option>`` on the command
line); an option whose default is an objective, model or evaluator class, or an options
dataclass, becomes a nested group of that class's own options (``method.alignment.trade_off``),
so every option is defined once: in the signature that uses it. ``method_config`` derives
the method's structured config from the signature (hydra-zen's ``builds``), and
``register_configs`` stores every method's in Hydra's ConfigStore, under ``method=<name>``:
a misspelt option stops at composition. The builder returns a ``Method``::

    @method
    def dann(alignment: Callable[..., Objective] = DomainAdversarial) -> Method:
        return Method("dann", [adaptation_stage({"alignment": alignment})])
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import pkgutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tlframe.engine.evaluation import Accuracy, Evaluator
from tlframe.engine.model import BackboneHead, TransferModel
from tlframe.engine.objective import CrossEntropy, Objective

LABELED = "labeled"  # in train_on: the target labels the setting has (data.target_labels)
PARTS = (Objective, TransferModel, Evaluator)  # classes whose options nest under an option


@dataclass(frozen=True)
class Stage:
    """One ``Trainer.fit`` of a method: what it trains, on which domains and labels.

    ``model``, the ``objectives`` and the ``evaluator`` are factories (a class, or a partial
    of one with its options bound) called as ``factory(...)`` with the uniform signatures of
    ``tlframe.engine``. ``trainer`` and ``optimizer`` are merged over the global configs;
    ``inherits``: the stage builds on the previous stage's parts (an error as first stage).
    """

    name: str
    train_on: Mapping[str, object]
    model: Callable[..., TransferModel] = BackboneHead
    objectives: Mapping[str, Callable[..., Objective]] = field(
        default_factory=lambda: {"cls": CrossEntropy}
    )
    evaluator: Callable[..., Evaluator] = Accuracy
    trainer: Mapping[str, Any] = field(default_factory=dict)
    optimizer: Mapping[str, Any] = field(default_factory=dict)
    selection: str | None = None
    init_from: str | None = None
    inherits: bool = False

    def with_objectives(self, extra: Mapping[str, Callable[..., Objective]]) -> Stage:
        return dataclasses.replace(self, objectives={**self.objectives, **extra})


@dataclass(frozen=True)
class Method:
    """A method's stages, run in order, and what it needs of the domains."""

    name: str
    stages: Sequence[Stage]
    same_classes: bool = True  # one head reads both domains' labels
    same_input_shape: bool = True  # one backbone reads both domains


@dataclass(frozen=True)
class Choice:
    """A part chosen by name from a config group, as an option's default: the method's
    ``method/<option>=<name>`` picks one (``method/pretext=rotation``), whose own options are
    ``method.<option>.<name's option>``. Called directly, it builds the default."""

    options: Mapping[str, type]
    default: str

    def __call__(self, **kwargs: Any) -> Any:
        return self.options[self.default](**kwargs)


METHODS: dict[str, Callable[..., Method]] = {}


def method(builder: Callable[..., Method]) -> Callable[..., Method]:
    """Register a method builder under its function name (``method=<name>``)."""
    METHODS[builder.__name__] = builder
    return builder


def load_methods() -> dict[str, Callable[..., Method]]:
    """Import every module of ``tlframe.methods``, which registers its builders."""
    import tlframe.methods as package

    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")
    return METHODS


def part_config(cls: type, **options: Any):
    """The structured config of a part class (partial: built later with the uniform
    arguments), its options from its signature."""
    from hydra_zen import builds

    excluded = tuple(
        name for name in ("model", "context", "objectives") if name in _parameters(cls)
    )
    return builds(
        cls, populate_full_signature=True, zen_partial=True, zen_exclude=excluded, **options
    )


def method_config(builder: Callable[..., Method]):
    """The structured config of a method builder: its signature, with part classes and
    options dataclasses as nested configs of their own options, and a ``Choice`` as a
    config group (``choices``) with its default selected."""
    from hydra_zen import builds

    nested, defaults = {}, ["_self_"]
    for name, parameter in inspect.signature(builder).parameters.items():
        default = parameter.default
        if isinstance(default, Choice):
            defaults.append({name: default.default})
            nested[name] = None  # filled by the group
        elif isinstance(default, type) and issubclass(default, PARTS):
            nested[name] = part_config(default)
        elif isinstance(default, functools.partial) and isinstance(default.func, type):
            nested[name] = part_config(default.func, **default.keywords)
        elif dataclasses.is_dataclass(default) and not isinstance(default, type):
            fields = {f.name: getattr(default, f.name) for f in dataclasses.fields(default)}
            nested[name] = builds(type(default), populate_full_signature=True, **fields)
    return builds(builder, populate_full_signature=True, hydra_defaults=defaults, **nested)


def choices(builder: Callable[..., Method]) -> dict[str, Choice]:
    """The ``Choice`` options of a method builder, by option name."""
    parameters = inspect.signature(builder).parameters.items()
    return {name: p.default for name, p in parameters if isinstance(p.default, Choice)}


@functools.cache
def register_configs() -> None:
    """Store every method's structured config (group ``method``) and every objective that
    any method may add (group ``objectives``) in Hydra's ConfigStore (once)."""
    from hydra.core.config_store import ConfigStore

    from tlframe.engine.objective import ADDABLE

    store = ConfigStore.instance()
    for name, builder in load_methods().items():
        store.store(group="method", name=name, node=method_config(builder))
        for option, choice in choices(builder).items():
            for label, cls in choice.options.items():
                store.store(group=f"method/{option}", name=label, node=part_config(cls))
    for name, cls in ADDABLE.items():
        store.store(
            group="objectives", name=name, node=part_config(cls), package=f"objectives.{name}"
        )


def describe(factory: Any) -> Any:
    """A plain, stable description of a factory (a class, function or partial, with its
    bound options): what a stage's cache key hashes."""
    if isinstance(factory, functools.partial):
        return {
            "target": _qualname(factory.func),
            **{k: describe(v) for k, v in sorted(factory.keywords.items())},
        }
    if inspect.isclass(factory) or inspect.isfunction(factory):
        return {"target": _qualname(factory)}
    if isinstance(factory, Mapping):
        return {str(k): describe(v) for k, v in factory.items()}
    if isinstance(factory, list | tuple):
        return [describe(v) for v in factory]
    return factory


def targets_of(factory: Any) -> set[str]:
    """The modules a factory's classes and functions come from (for the cache key)."""
    if isinstance(factory, functools.partial):
        found = {factory.func.__module__}
        for value in factory.keywords.values():
            found |= targets_of(value)
        return found
    if inspect.isclass(factory) or inspect.isfunction(factory):
        return {factory.__module__}
    if isinstance(factory, Mapping):
        return set().union(*(targets_of(v) for v in factory.values())) if factory else set()
    return set()


def _qualname(obj: Any) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def _parameters(cls: type) -> Mapping[str, inspect.Parameter]:
    return inspect.signature(cls).parameters
