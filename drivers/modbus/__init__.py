"""Modbus TCP, RTU, ASCII and RTU-over-TCP driver (see README.md)."""
