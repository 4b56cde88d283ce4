"""Internal helpers shared by every layer of the package (not public API)."""
