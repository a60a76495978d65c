"""Firewall backends: render a Ruleset for one kernel interface, read it back, apply it."""
