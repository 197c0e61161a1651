"""The ``placer`` console script: :mod:`placer.cli.app` assembles the command groups; each module parses and
prints, with one library call per command."""

from placer.cli.app import main

__all__ = ["main"]
