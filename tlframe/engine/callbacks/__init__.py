"""Lightning callbacks tlframe adds to the library's own."""

from tlframe.engine.callbacks.feature_space import FeatureSpace
from tlframe.engine.callbacks.model_selection import ModelSelection
from tlframe.engine.callbacks.progress import ProgressBar
from tlframe.engine.callbacks.random_state import RandomState

__all__ = ["FeatureSpace", "ModelSelection", "ProgressBar", "RandomState"]
