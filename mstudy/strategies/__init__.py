"""Strategies of mstudy."""
