"""The engine every method runs on: stages, selection, the stage cache, outputs, distribution."""
