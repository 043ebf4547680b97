"""Edge processing: one stage between the scheduler and the buffer.

Every sample a device produces (whatever its driver) passes through that
device's chain of steps before it is stored. A step is built once per device
from its config (all per-tag decisions made then, never per reading) and
keeps only bounded state (one entry per tag). Steps that a device does not
use are not built, so a device without processing options costs one
function call per batch.

To add a step: write it in its own module here and add its factory to
``STEP_FACTORIES`` in the order it must run (derived values before the
report-by-exception filter, which decides what is sent).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from agent.pipeline.processing.alarms import make_alarms
from agent.pipeline.processing.computed import make_computed
from agent.pipeline.processing.report import make_report_step
from agent.pipeline.processing.stale import make_stale_step
from agent.pipeline.processing.windows import make_raw_filter, make_windows
from agent.sdk import DeviceConfig, Sample

__all__ = ["STEP_FACTORIES", "DeviceChain", "Processing", "Step", "StepFactory"]

log = logging.getLogger("agent.pipeline.processing")


class Step(Protocol):
    """One processing step of one device."""

    def process(self, samples: list[Sample]) -> list[Sample]:
        """Return the samples to pass on (may be fewer, more, or changed)."""
        ...


#: Builds a device's step from its config, or None when the device does not use it.
StepFactory = Callable[[DeviceConfig], Step | None]


#: The steps, in the order they run.  Derived values first; the alarms see
#: every raw reading, also of tags whose readings are then not sent
#: (``aggregate`` with ``raw: false``); stale marks quality on what is left,
#: and report (last) decides what is sent.
STEP_FACTORIES: tuple[StepFactory, ...] = (make_computed, make_windows, make_alarms,
                                           make_raw_filter, make_stale_step, make_report_step)


class DeviceChain:
    """The steps of one device, built once from its config."""

    __slots__ = ("config", "errors", "steps")

    def __init__(self, config: DeviceConfig,
                 factories: Sequence[StepFactory] = STEP_FACTORIES) -> None:
        self.config = config
        self.steps = [step for make in factories if (step := make(config)) is not None]
        #: Batches a step failed on (a bug): they went on without that step.
        self.errors = 0

    def process(self, samples: list[Sample]) -> list[Sample]:
        for step in self.steps:
            if not samples:
                break
            try:
                samples = step.process(samples)
            except Exception:
                # Never lose readings or kill the device's task over a step:
                # the batch goes on as it was; said once per chain.
                if not self.errors:
                    log.exception("device %s: processing step %s failed; its readings "
                                  "go on without it", self.config.name, type(step).__name__)
                self.errors += 1
        return samples


    def tick(self, now: int) -> list[Sample]:
        """Samples the steps produce from the clock alone (a window that ended
        on a quiet device), passed through the steps after the one that made them."""
        out: list[Sample] = []
        for i, step in enumerate(self.steps):
            tick = getattr(step, "tick", None)
            if tick is None:
                continue
            try:
                made: list[Sample] = tick(now)
                for later in self.steps[i + 1:]:
                    if made:
                        made = later.process(made)
            except Exception:
                if not self.errors:
                    log.exception("device %s: processing tick of %s failed", self.config.name,
                                  type(step).__name__)
                self.errors += 1
                continue
            out.extend(made)
        return out


class Processing:
    """The stage: one chain per device, rebuilt (state reset) when its config changes."""

    def __init__(self, factories: Sequence[StepFactory] = STEP_FACTORIES) -> None:
        self._factories = factories
        self._chains: dict[str, DeviceChain] = {}

    def apply(self, devices: Sequence[DeviceConfig]) -> None:
        """Match the running devices; an unchanged device keeps its state."""
        chains: dict[str, DeviceChain] = {}
        for config in devices:
            old = self._chains.get(config.name)
            chains[config.name] = (old if old is not None and old.config == config
                                   else DeviceChain(config, self._factories))
        self._chains = chains

    def active_alarms(self) -> dict[str, list[dict[str, Any]]]:
        """Active alarms per device (devices without any left out)."""
        out: dict[str, list[dict[str, Any]]] = {}
        for name, chain in self._chains.items():
            for step in chain.steps:
                listing = getattr(step, "active_alarms", None)
                if listing is not None and (active := listing()):
                    out.setdefault(name, []).extend(active)
        return out

    def tick(self, now: int) -> dict[str, list[Sample]]:
        """What the clock alone produces, per device (see DeviceChain.tick); call every second."""
        out: dict[str, list[Sample]] = {}
        for name, chain in self._chains.items():
            if chain.steps and (made := chain.tick(now)):
                out[name] = made
        return out

    def __call__(self, device: str, samples: list[Sample]) -> list[Sample]:
        chain = self._chains.get(device)
        if chain is None or not chain.steps:
            return samples
        return chain.process(samples)
