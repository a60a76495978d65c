"""`python -m dockwall` is the `dockwall` command."""

from dockwall.cli import main

main()
