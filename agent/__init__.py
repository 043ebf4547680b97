"""edge-agent: the shop-floor gateway core."""

__version__ = "0.1.0"
