"""tlframe: a config-driven research framework for transfer learning."""

__version__ = "0.1.0"
