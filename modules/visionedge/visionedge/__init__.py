"""visionedge: a camera as a privacy-preserving sensor; labels leave the device, pixels never do."""

__version__ = "0.1.0"
