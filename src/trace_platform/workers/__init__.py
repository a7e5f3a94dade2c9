"""Trusted worker runtime (the worker wrapper) and built-in operators."""
