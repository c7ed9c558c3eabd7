"""`reloc` subcommands for ablate (registered by reloc_ros.cli.main)."""

from __future__ import annotations


def add_parsers(sub) -> dict:
    return {}
