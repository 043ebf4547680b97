"""Fixtures for broker tests: private NATS servers (see nats.py)."""

from tests.brokers.nats import nats, nats_cluster

__all__ = ["nats", "nats_cluster"]
