"""The OPC UA driver: one client session per device, poll or subscribe.

Planning happens at connect: node strings are resolved against the server's
namespace array (so ``nsu=`` nodes survive a reordered array), and the Read
requests are built once, split at the server's MaxNodesPerRead.  A scan is
then one Read service call per chunk, each DataValue's status checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Sequence
from typing import Any, cast

from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaStatusCodeError

from agent.sdk.driver import DeviceUnavailable, Driver, DriverContext, DriverError, Emit, WriteRefused
from agent.sdk.readings import Sample, now_ms
from drivers.opcua.convert import fill, from_json, to_json
from drivers.opcua.nodeid import UnknownNamespace, parse_node
from drivers.opcua.options import OpcuaDevice
from drivers.opcua.session import close_client, is_connection_error, open_client, status_name
from drivers.opcua.subscribe import Batcher, add_items, start_subscription
from drivers.opcua.types import variant_type

__all__ = ["OpcuaDriver"]

_OBJ = ObjectIds
_LIMIT_NODES = (
    _OBJ.Server_ServerCapabilities_OperationLimits_MaxNodesPerRead,
    _OBJ.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
)
# How often tags of a namespace the server lacks are looked up again.
NAMESPACE_RECHECK = 30.0
# Used when the server does not publish its limits: small enough for any
# server we know, large enough to keep scans at a few calls.
_DEFAULT_LIMIT = 1000
# The shared link (agent.sdk.links) guarding the client certificate files.
_CERT_LOCK = "client-certificate"


def to_ua_node(ref_text: str, namespaces: list[str]) -> ua.NodeId:
    ref = parse_node(ref_text)
    index = ref.resolve_index(namespaces)
    kinds = {"i": ua.NodeIdType.Numeric, "s": ua.NodeIdType.String,
             "g": ua.NodeIdType.Guid, "b": ua.NodeIdType.ByteString}
    return ua.NodeId(ref.ident, index, kinds[ref.kind])  # type: ignore[arg-type]


class OpcuaDriver(Driver):
    def __init__(self, config: OpcuaDevice, context: DriverContext) -> None:
        super().__init__(config, context)
        self.cfg = config
        self.push = config.mode == "subscribe"
        self.names = [t.name for t in config.tags]
        self._index = {name: i for i, name in enumerate(self.names)}
        self._client: Client | None = None
        self._lost = asyncio.Event()
        self._lost_reason = ""
        self._nodes: list[ua.NodeId | None] = []
        self._unresolved: dict[int, str] = {}
        self._filter_refused: dict[int, str] = {}  # tags whose deadband filter the server refused
        self._read_limit = _DEFAULT_LIMIT
        self._items_limit = _DEFAULT_LIMIT
        self._plan: list[tuple[ua.ReadParameters, list[str]]] = []
        self._recheck_at = 0.0
        self._owner = f"{config.name}@{id(self):x}"

    # -- connection -----------------------------------------------------------

    async def connect(self) -> None:
        lost = self._lost = asyncio.Event()
        self._lost_reason = ""
        # One lock for every device of this driver: they share the client
        # certificate in the state directory, created by the first to connect.
        lock = self.context.links.acquire(_CERT_LOCK, owner=self._owner, kind=asyncio.Lock,
                                          factory=asyncio.Lock)

        async def on_lost(err: Exception) -> None:
            # Called by asyncua's watchdog: a dropped socket or an unanswered
            # probe.  Bound to this session, so a late call from an old one
            # cannot mark a fresh session lost.
            if lost is self._lost:
                text = "server stopped answering" if isinstance(err, TimeoutError) else (
                    f"connection lost: {err or type(err).__name__}")
                self._mark_lost(text)

        self._client = await open_client(
            self.cfg.connection, state_dir=self.context.state_dir, log=self.context.log,
            cert_lock=lock, on_lost=on_lost,
        )
        try:
            await self._plan_reads(self._client)
        except Exception as err:
            raise self._unavailable(err) from err

    def _mark_lost(self, reason: str) -> None:
        if not self._lost.is_set():
            self._lost_reason = reason
            self._lost.set()

    def _unavailable(self, err: BaseException) -> DeviceUnavailable:
        if isinstance(err, DeviceUnavailable):
            return err
        if isinstance(err, UaStatusCodeError):
            text = status_name(err.code)
        elif isinstance(err, TimeoutError):
            text = f"no answer within {self.cfg.connection.timeout:g}s"
        else:
            text = str(err) or type(err).__name__
        self._mark_lost(text)
        return DeviceUnavailable(f"{self.cfg.connection.endpoint}: {text}",
                                 device=self.cfg.name)

    async def _plan_reads(self, client: Client) -> None:
        namespaces = await client.get_namespace_array()
        self._nodes, self._unresolved = [], {}
        for i, tag in enumerate(self.cfg.tags):
            try:
                self._nodes.append(to_ua_node(tag.node, namespaces))
            except UnknownNamespace as err:
                self._nodes.append(None)
                self._unresolved[i] = str(err)
        self._recheck_at = time.monotonic() + NAMESPACE_RECHECK
        read_limit, items_limit = await self._limits(client)
        self._read_limit, self._items_limit = read_limit, items_limit
        self._plan = self._build_plan(self.names)

    async def _resolve_late(self, client: Client) -> list[int]:
        """Tags whose ``nsu=`` namespace the server has registered since the
        connect (servers that load their project after opening the port)."""
        if not self._unresolved or time.monotonic() < self._recheck_at:
            return []
        self._recheck_at = time.monotonic() + NAMESPACE_RECHECK
        namespaces = await client.get_namespace_array()
        found = []
        for i in list(self._unresolved):
            try:
                self._nodes[i] = to_ua_node(self.cfg.tags[i].node, namespaces)
            except UnknownNamespace:
                continue
            del self._unresolved[i]
            found.append(i)
        if found:
            self._plan = self._build_plan(self.names)
        return found

    async def _limits(self, client: Client) -> tuple[int, int]:
        params = ua.ReadParameters()
        params.NodesToRead = [
            ua.ReadValueId(NodeId=ua.NodeId(n), AttributeId=AttributeIds.Value)  # type: ignore[arg-type]
            for n in _LIMIT_NODES
        ]
        limits = []
        for dv in await client.uaclient.read(params):
            value = dv.Value.Value if dv.Value is not None else None
            good = dv.StatusCode is None or dv.StatusCode.is_good()
            # 0 means "no limit" in OPC UA; a server without the node gets our default.
            if good and isinstance(value, int):
                limits.append(value or 1 << 31)
            else:
                limits.append(_DEFAULT_LIMIT)
        return limits[0], limits[1]

    def _build_plan(self, names: Sequence[str]) -> list[tuple[ua.ReadParameters, list[str]]]:
        resolved = [(n, self._nodes[self._index[n]]) for n in names]
        pairs = [(n, node) for n, node in resolved if node is not None]
        plan = []
        for start in range(0, len(pairs), self._read_limit):
            chunk = pairs[start:start + self._read_limit]
            params = ua.ReadParameters()
            params.TimestampsToReturn = ua.TimestampsToReturn.Both
            params.NodesToRead = [ua.ReadValueId(NodeId=node, AttributeId=AttributeIds.Value)
                                  for _, node in chunk]
            plan.append((params, [n for n, _ in chunk]))
        return plan

    def _require(self) -> Client:
        client = self._client
        if client is None:
            raise DeviceUnavailable("not connected", device=self.cfg.name)
        if self._lost.is_set() or client.uaclient.state is not UaClientState.CONNECTED:
            raise DeviceUnavailable(
                f"{self.cfg.connection.endpoint}: {self._lost_reason or 'connection lost'}",
                device=self.cfg.name)
        return client

    async def close(self) -> None:
        client, self._client = self._client, None
        self.context.links.release(_CERT_LOCK, self._owner)
        if client is not None:
            await close_client(client)

    # -- poll -----------------------------------------------------------------

    async def read(self, tags: Sequence[str] | None = None) -> Sample:
        client = self._require()
        names = self.names if tags is None else list(tags)
        for name in names:
            if name not in self._index:
                raise DriverError(f"device {self.cfg.name} has no tag {name!r}")
        try:
            await self._resolve_late(client)
        except Exception as err:
            raise self._unavailable(err) from err
        plan = self._plan if tags is None else self._build_plan(names)
        sample = Sample(ts=now_ms(), values={})
        for params, chunk_names in plan:
            try:
                results = await client.uaclient.read(params)
            except Exception as err:
                if is_connection_error(err) or not isinstance(err, UaStatusCodeError):
                    raise self._unavailable(err) from err
                # A service fault for this call only: its tags are bad this scan.
                for name in chunk_names:
                    sample.values[name] = None
                    sample.bad[name] = status_name(err.code)
                smaller = len(chunk_names) // 2
                if err.code == StatusCodes.BadTooManyOperations and 0 < smaller < self._read_limit:
                    # The server's real limit is below what it published.
                    self._read_limit = smaller
                    self._plan = self._build_plan(self.names)
                    self.context.counters.count("read_limit_lowered")
                continue
            for name, dv in zip(chunk_names, results, strict=True):
                fill(sample, name, dv)
        for i, why in self._unresolved.items():
            if self.names[i] in names:
                sample.values[self.names[i]] = None
                sample.bad[self.names[i]] = why
        # Keep the configured tag order in values (dicts keep insertion order).
        sample.values = {n: sample.values[n] for n in names}
        return sample

    # -- subscribe ------------------------------------------------------------

    async def stream(self, emit: Emit) -> None:
        client = self._require()
        conn = self.cfg.connection
        batcher = Batcher(self.names, emit, stale_after=math.inf)  # set from the server's answer
        nodes = [(i, n) for i, n in enumerate(self._nodes) if n is not None]
        refused: dict[int, str] = {}
        try:
            sub_id, failed = await start_subscription(
                client, self.cfg, nodes, batcher, self._items_limit, refused)
        except Exception as err:
            raise self._unavailable(err) from err
        self._log_refused(refused)
        failed.update(self._unresolved)
        self._emit_failed(emit, failed)
        period = min(1.0, batcher.stale_after / 3, conn.keepalive)
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), timeout=period)
            try:
                found = await self._resolve_late(client)
                if found:
                    late = [(i, n) for i in found if (n := self._nodes[i]) is not None]
                    self._emit_failed(emit, await add_items(
                        client, self.cfg, sub_id, late, self._items_limit, refused))
                    self._log_refused(refused)
            except Exception as err:
                raise self._unavailable(err) from err
            if batcher.failure is not None:
                self._mark_lost(batcher.failure)
            elif batcher.stale():
                self._mark_lost(f"no data or keep-alive for {batcher.stale_after:g}s")
            if self._lost.is_set():
                raise DeviceUnavailable(f"{conn.endpoint}: {self._lost_reason}",
                                        device=self.cfg.name)
            # Checked and alive: a subscription without changes is quiet, not
            # dead (its keep-alives are watched above), so tell the core.
            emit([])

    def _log_refused(self, refused: dict[int, str]) -> None:
        # Once per tag for the life of the device, not at every reconnect.
        new = {i: why for i, why in refused.items() if i not in self._filter_refused}
        if not new:
            return
        self._filter_refused.update(new)
        self.context.counters.count("deadband_filters_refused", len(new))
        by_status: dict[str, list[str]] = {}
        for i, why in new.items():
            by_status.setdefault(why, []).append(self.names[i])
        for why, names in by_status.items():
            local = [n for n in names if (self.cfg.tag(n).report or self.cfg.report) == "change"]
            self.context.log.warning(
                "device %s: the server refused the deadband filter (%s) on %s; subscribed "
                "without it: %s", self.cfg.name, why, ", ".join(names),
                "the agent's report-by-exception stage applies the deadband" if len(local) ==
                len(names) else "every change is sent (set report: change to filter locally)",
                extra={"device": self.cfg.name})

    def _emit_failed(self, emit: Emit, failed: dict[int, str]) -> None:
        # Tags without a monitored item: one bad sample, as their only reading.
        if failed:
            names = [self.names[i] for i in sorted(failed)]
            emit([Sample(ts=now_ms(), values=dict.fromkeys(names),
                         bad={self.names[i]: why for i, why in failed.items()})])
            self.context.counters.count("items_failed", len(failed))

    # -- write ----------------------------------------------------------------

    async def write(self, tag: str, value: Any) -> Any:
        index = self._index.get(tag)
        if index is None:
            raise WriteRefused(f"device {self.cfg.name} has no tag {tag!r}")
        client = self._require()
        node = self._nodes[index]
        if node is None:
            raise WriteRefused(self._unresolved[index])
        try:
            vtype, is_array = await variant_type(client, node)
        except Exception as err:
            if is_connection_error(err):
                raise self._unavailable(err) from err
            node_text = self.cfg.tags[index].node
            raise WriteRefused(f"cannot read the type of {node_text}: {err}") from err
        variant = from_json(value, vtype, is_array)
        # Value only: several PLCs refuse writes that carry status or timestamps.
        dv = ua.DataValue(variant, StatusCode=None)
        params = ua.WriteParameters()
        params.NodesToWrite = [ua.WriteValue(NodeId=node, AttributeId=AttributeIds.Value, Value=dv)]
        try:
            status = (await client.uaclient.write(params))[0]
            result = (await client.uaclient.read(_read_value(node)))[0]
        except Exception as err:
            if is_connection_error(err):
                raise self._unavailable(err) from err
            raise DriverError(f"write failed: {err}", device=self.cfg.name) from err
        if not status.is_good():
            raise DriverError(f"the server refused the write: {status.name}",
                              device=self.cfg.name)
        if result.StatusCode is not None and result.StatusCode.is_bad():
            raise DriverError(f"read-back failed: {result.StatusCode.name}", device=self.cfg.name)
        back = result.Value
        return None if back is None else to_json(back.Value, back.VariantType)


def _read_value(node: ua.NodeId) -> ua.ReadParameters:
    params = ua.ReadParameters()
    params.NodesToRead = [ua.ReadValueId(NodeId=node, AttributeId=AttributeIds.Value)]
    return params


def factory(config: Any, context: DriverContext) -> Driver:
    return OpcuaDriver(cast(OpcuaDevice, config), context)

