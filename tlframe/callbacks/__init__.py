"""Lightning callbacks tlframe adds to the library's own."""

from tlframe.callbacks.feature_space import FeatureSpace
from tlframe.callbacks.progress import ProgressBar
from tlframe.callbacks.random_state import RandomState
from tlframe.callbacks.selection import ModelSelection

__all__ = ["FeatureSpace", "ModelSelection", "ProgressBar", "RandomState"]
