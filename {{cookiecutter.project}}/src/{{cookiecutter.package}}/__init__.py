"""A model delivery pipeline: one module per stage, a thin CLI over them (see README.md)."""
