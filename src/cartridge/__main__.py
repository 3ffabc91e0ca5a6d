"""`python -m cartridge` is the `cartridge` command."""

from cartridge.cli import app

app()
