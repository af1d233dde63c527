"""Why a model update did not happen, split by what the operator should do about it."""

from __future__ import annotations

from visionedge.errors import VisionEdgeError


class UpdateRejected(VisionEdgeError):
    """The twin block can never work as given (acknowledged 400): fix the block, retrying it cannot help."""


class UpdateFailed(VisionEdgeError):
    """Applying failed for a reason outside the block (acknowledged 500): network, disk or the post-swap watch."""


class UpdateCancelled(VisionEdgeError):
    """A newer desired version, a rollback or shutdown took over; the one who cancelled reports the outcome."""
