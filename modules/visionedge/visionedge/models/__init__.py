"""Model adapters: a manifest says how to feed a model and read its outputs."""
