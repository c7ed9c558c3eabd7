"""Thin command-line wrappers around the core."""
