"""Protocol plugins for edge-agent; each sub-package is one driver."""
