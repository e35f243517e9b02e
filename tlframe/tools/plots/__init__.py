"""Figures drawn from the metrics.json files of finished runs and sweeps."""
