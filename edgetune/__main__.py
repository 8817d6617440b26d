"""``python -m edgetune`` runs the command-line interface."""

from edgetune.search.cli import main

main()
