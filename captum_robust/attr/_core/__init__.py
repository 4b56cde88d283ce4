"""Implementations, one module per family of attributions."""
