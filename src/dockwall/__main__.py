"""`python -m dockwall` is the `dockwall` command."""

from dockwall.cli.commands import main

main()
