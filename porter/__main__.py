"""`python -m porter ...` runs the CLI."""

from porter.cli import main

main()
