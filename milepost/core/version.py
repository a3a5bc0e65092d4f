"""The release of this code, reported by agents, the coordinator and the CLI."""

__version__ = "0.1.0"
