"""Sandboxed clouds and planted-incident scenario builders shared by the tests and ``cloudir demo``."""
