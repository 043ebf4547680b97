"""The small interface every protocol driver implements.

A driver package imports only this module (and ``agent.sdk.types`` for
field types); the core never imports a concrete driver.  It finds drivers
through the ``edge_agent.drivers`` entry-point group, each entry naming a
:class:`DriverPlugin`.

Life of a driver instance (one per configured device):

1. ``connect()`` opens the connection (raises :class:`DeviceUnavailable`).
2. Poll devices: ``read()`` is called once per poll period and returns one
   :class:`Sample`; a tag that failed has ``None`` in ``values`` and its
   error in ``bad``.  A connection-level failure raises
   :class:`DeviceUnavailable`: the scheduler then marks every tag bad,
   calls ``close()`` and reconnects with backoff.
3. Push devices (``push`` is true: OPC UA subscriptions, serial streams):
   ``stream(emit)`` runs until the connection is lost, calling ``emit`` with
   lists of samples; it returns or raises :class:`DeviceUnavailable`.
4. ``write()`` writes one tag and returns the value read back.  The core has
   already checked ``writable`` and ``min``/``max`` (see ``agent.pipeline.writes``);
   the driver checks what only it knows (the type's range) and raises
   :class:`WriteRefused`.
5. ``close()`` is always called, also after a failed ``connect()``.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, field_serializer

from agent.sdk.analytics_options import AnalyticsOptions
from agent.sdk.counters import DeviceCounters
from agent.sdk.links import SharedLinks
from agent.sdk.processing_options import ProcessingDeviceOptions, ProcessingTagOptions
from agent.sdk.readings import Sample
from agent.sdk.tag_table import TagTable
from agent.sdk.types import Duration

__all__ = [
    "DeviceConfig",
    "DeviceUnavailable",
    "Driver",
    "DriverContext",
    "DriverError",
    "DriverPlugin",
    "Emit",
    "Sample",
    "StrictModel",
    "TagConfig",
    "WriteRefused",
]


class StrictModel(BaseModel):
    """Base of every config model: unknown keys are errors, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class TagConfig(ProcessingTagOptions, StrictModel):
    """Options every tag has, whatever the protocol; drivers subclass it."""

    name: str = Field(pattern=NAME_PATTERN, description="Key of the value in samples")
    unit: str | None = Field(None, description="Engineering unit, informational")
    writable: bool = Field(False, description="Allow writes to this tag (local and remote)")
    min: float | None = Field(None, description="Lowest value a write may set")
    max: float | None = Field(None, description="Highest value a write may set")


class DeviceConfig(AnalyticsOptions, ProcessingDeviceOptions, StrictModel):
    """Options every device has; each driver subclasses it with its own.

    Subclasses add ``connection`` and ``tags`` (a list of a TagConfig
    subclass) and may narrow ``poll``.
    """

    name: str = Field(pattern=NAME_PATTERN, description="Unique device name; used in topics")
    driver: str = Field(description="Driver plugin name (entry point in edge_agent.drivers)")
    poll: Duration = Field(1.0, gt=0, description="Poll period (seconds, or 500ms, 1s, 5m)")
    tags: Sequence[TagConfig] = Field(default_factory=list)

    @field_serializer("tags", mode="wrap", check_fields=False)
    def _tags_as_list(self, tags: Sequence[TagConfig], handler: SerializerFunctionWrapHandler,
                      ) -> Any:
        # A validated site keeps tags as a TagTable (columns, not models): dumped
        # as the list of tags it stands for, as before.
        return handler(list(tags))

    def tag_names(self) -> list[str]:
        if isinstance(self.tags, TagTable):
            return self.tags.column("name")
        return [t.name for t in self.tags]

    def tag_values(self, field: str) -> list[Any]:
        """One option of every tag, in order (``tag_values("unit")``), without building tags."""
        if isinstance(self.tags, TagTable):
            return self.tags.column(field)
        return [getattr(t, field) for t in self.tags]

    def find_tag(self, name: str) -> TagConfig | None:
        if isinstance(self.tags, TagTable):
            found: TagConfig | None = self.tags.find(name)
            return found
        for tag in self.tags:
            if tag.name == name:
                return tag
        return None


class DriverError(Exception):
    """Base of driver errors; ``str(err)`` is what a reading's error shows."""

    def __init__(self, message: str, *, device: str = "", code: str | None = None) -> None:
        # ``code`` was never read by the core; still accepted so drivers
        # written against the first interface keep working.
        super().__init__(message)
        self.device = device


class DeviceUnavailable(DriverError):
    """The connection is gone or could not be made; the scheduler reconnects."""


class WriteRefused(DriverError):
    """A write was refused before anything reached the device."""


@dataclass
class DriverContext:
    """What the core hands a driver instance."""

    state_dir: Path
    counters: DeviceCounters
    log: logging.Logger
    #: Links shared by devices of one driver (one RS-485 port, one TCP
    #: endpoint): one owner object each, refcounted (see :mod:`agent.sdk.links`).
    links: SharedLinks = field(default_factory=SharedLinks)
    #: Deprecated: the untyped predecessor of ``links``, still one dict per
    #: driver for drivers written before it; new code uses ``links``.
    shared: dict[str, Any] = field(default_factory=dict)


Emit = Callable[[list[Sample]], None]


class Driver(abc.ABC):
    """One instance per device."""

    #: True when the device delivers data itself (``stream``) instead of
    #: being polled (``read``).  Drivers may set it per instance.
    push: bool = False

    def __init__(self, config: DeviceConfig, context: DriverContext) -> None:
        self.config = config
        self.context = context

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def read(self, tags: Sequence[str] | None = None) -> Sample:
        """Read ``tags`` (all when None) once; per-tag failures go in ``bad``."""

    async def stream(self, emit: Emit) -> None:
        raise NotImplementedError(f"{type(self).__name__} has no push mode")

    async def write(self, tag: str, value: Any) -> Any:
        raise WriteRefused(f"driver {self.config.driver} cannot write", device=self.config.name)

    @abc.abstractmethod
    async def close(self) -> None: ...


@dataclass(frozen=True)
class DriverPlugin:
    """What an ``edge_agent.drivers`` entry point names.

    ``config_model`` must be importable cheaply (no protocol library): it is
    used by ``edge-agent check``.  ``factory`` imports the protocol library
    lazily, so a Modbus-only site never loads OPC UA.
    """

    name: str
    config_model: type[DeviceConfig]
    factory: Callable[[DeviceConfig, DriverContext], Driver]
    #: Optional site-level check over all devices of this driver (e.g. bus
    #: load).  Returns human-readable warnings; never opens a device.
    check: Callable[[Sequence[DeviceConfig]], list[str]] | None = None
    description: str = ""
    #: Name of the tag-config field holding the protocol address, used by
    #: ``edge-agent read --address`` to build an ad-hoc tag.
    address_field: str = "address"
