"""OPC UA driver: see README.md."""
