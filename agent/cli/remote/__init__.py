"""The operator's side of remote management: ``edge-agent remote ...``."""
