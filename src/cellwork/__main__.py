"""``python -m cellwork``: the CLI."""

from cellwork.cli import main

main()
