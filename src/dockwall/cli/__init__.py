"""The command line: commands (click), the operations behind them (app), and how results
look (report)."""

from dockwall.cli.commands import main

__all__ = ["main"]
