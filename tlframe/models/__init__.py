"""Backbones, heads, schedules and reusable layers."""
