"""The module under IoT Edge: SDK client, twin, direct methods and status around the local pipeline."""

from visionedge.edge.runtime import run_edge_module

__all__ = ["run_edge_module"]
