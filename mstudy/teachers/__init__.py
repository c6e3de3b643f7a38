"""Teachers of mstudy."""
