"""dmtl: distributed multi-task learning, node-batched."""

__version__ = "0.1.0"
