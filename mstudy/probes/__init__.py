"""Probes of mstudy."""
