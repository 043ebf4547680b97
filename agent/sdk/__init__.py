"""Everything a driver may import from the core, in one place.

A driver package imports ``agent.sdk`` (or its modules) and nothing else of
``agent``; the core finds drivers through the ``edge_agent.drivers``
entry-point group and never imports a concrete driver.
"""

from agent.sdk.backoff import Backoff
from agent.sdk.counters import DeviceCounters
from agent.sdk.driver import (
    NAME_PATTERN,
    DeviceConfig,
    DeviceUnavailable,
    Driver,
    DriverContext,
    DriverError,
    DriverPlugin,
    Emit,
    StrictModel,
    TagConfig,
    WriteRefused,
)
from agent.sdk.links import LinkConflict, SharedLinks
from agent.sdk.readings import NOT_FINITE, Sample, now_ms
from agent.sdk.types import ByteSize, Duration, Secret, SecretText, check_url

__all__ = [
    "NAME_PATTERN",
    "NOT_FINITE",
    "Backoff",
    "ByteSize",
    "DeviceConfig",
    "DeviceCounters",
    "DeviceUnavailable",
    "Driver",
    "DriverContext",
    "DriverError",
    "DriverPlugin",
    "Duration",
    "Emit",
    "LinkConflict",
    "Sample",
    "Secret",
    "SecretText",
    "SharedLinks",
    "StrictModel",
    "TagConfig",
    "WriteRefused",
    "check_url",
    "now_ms",
]
