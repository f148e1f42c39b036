"""Metrics, survival analysis, per-task evaluation and multi-seed aggregation."""
