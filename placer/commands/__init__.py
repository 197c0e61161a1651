"""CLI command groups: each module defines typer commands; ``placer.cli`` assembles them. Commands only parse
arguments, make one library call, and print."""
