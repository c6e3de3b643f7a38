"""Sinks of mstudy."""
