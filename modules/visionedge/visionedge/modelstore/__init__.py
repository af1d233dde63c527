"""Safe model updates: a persistent store of verified versions and the manager that swaps and watches them."""

from visionedge.modelstore.errors import UpdateCancelled, UpdateFailed, UpdateRejected
from visionedge.modelstore.manager import ModelManager, UpdateState
from visionedge.modelstore.refs import Resolved, version_key
from visionedge.modelstore.store import ModelStore, Staged

__all__ = [
    "ModelManager",
    "ModelStore",
    "Resolved",
    "Staged",
    "UpdateCancelled",
    "UpdateFailed",
    "UpdateRejected",
    "UpdateState",
    "version_key",
]
