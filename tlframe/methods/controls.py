"""The two controls every transfer method is judged against."""

from __future__ import annotations

from tlframe.engine.method import LABELED, Method, Stage, method
from tlframe.methods.common import source_stage


@method
def source_only(init_from: str | None = None) -> Method:
    """Train on the labeled source domain only, test on the target: what transfer must beat
    without target labels. ``init_from``: a .ckpt file or a run dir to load instead of
    training (tlframe-rank scores a given source model so)."""
    return Method("source_only", [source_stage(init_from)])


@method
def target_only() -> Method:
    """Train from scratch on the target labels the setting has (``data.target_labels``):
    what transfer must beat with them."""
    # it never reads a source label, so any source may name the pair (self-taught learning
    # from letters is judged against it on the same digits)
    return Method("target_only", [Stage("target", {"target": LABELED})], same_classes=False)
