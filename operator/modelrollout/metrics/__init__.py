"""Metric sources: one module per source behind :class:`~modelrollout.metrics.base.MetricSource`."""
