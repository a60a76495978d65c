"""dockwall: decide who may reach the containers on a Docker host."""

__version__ = "0.1.0"
