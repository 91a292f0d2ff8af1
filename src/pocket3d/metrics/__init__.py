"""Prometheus metrics of a node (``GET /metrics``)."""

from pocket3d.metrics.collector import Metrics

__all__ = ["Metrics"]
