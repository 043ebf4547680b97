"""Analytics fixtures: a real Modbus server whose registers the test sets (the Modbus tests' own)."""

from tests.modbus.conftest import server

__all__ = ["server"]
