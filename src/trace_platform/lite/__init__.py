"""Lite profile: the whole platform in one process on one machine."""
