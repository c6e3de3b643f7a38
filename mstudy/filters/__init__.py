"""Filters of mstudy."""
