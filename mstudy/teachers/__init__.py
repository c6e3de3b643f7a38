"""Teachers of mstudy."""

__all__ = []
