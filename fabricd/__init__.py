"""fabricd: a per-host network fabric agent for multi-host LXD."""

__version__ = "0.1.0"
