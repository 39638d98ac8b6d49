"""Argument validation and atomic file writing shared by every layer of the package."""
