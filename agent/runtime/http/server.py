"""A tiny read-only HTTP/1.1 server on the agent's event loop.

Why the standard library's asyncio streams and not aiohttp: the surface is
three GET routes answered from memory, one response per connection.  That
is ~150 lines here against a framework (plus multidict, yarl, frozenlist,
aiosignal...) loaded into every gateway's RSS; nothing here needs routing
tables, middlewares, keep-alive pools or websockets.

Each connection is bounded (header size, one request, a read timeout, a cap
on concurrent connections), so a stuck or hostile client cannot hold the
loop or grow memory.  Requests are not logged (a ``?token=`` would be).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent.config.model import split_listen
from agent.runtime.http.auth import token_ok
from agent.runtime.recent_log import RecentProblems
from agent.runtime.status import CpuSampler, snapshot

if TYPE_CHECKING:
    from agent.config.model import HttpConfig
    from agent.runtime.agent import Agent

__all__ = ["HttpServer", "Shared", "status_data"]

log = logging.getLogger("agent.http")

MAX_HEAD = 16 * 1024  # request line + headers
READ_TIMEOUT = 10.0
MAX_CONNECTIONS = 16
# The label values of edge_agent_http_requests_total: fixed, never the raw path.
ROUTES = ("/", "/metrics", "/api/status")

_REASONS = {200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 500: "Internal Server Error",
            503: "Service Unavailable"}


@dataclass
class Shared:
    """What outlives one server instance (a reload restarts the server)."""

    requests: Counter[str] = field(default_factory=Counter)
    unauthorized: int = 0
    problems: RecentProblems = field(default_factory=RecentProblems)
    cpu: CpuSampler = field(default_factory=CpuSampler)


def _finite(obj: Any) -> Any:
    # JSON has no NaN/Infinity; a browser's JSON.parse would reject the page's data.
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def status_data(agent: Agent, shared: Shared) -> dict[str, Any]:
    """The ``status`` result plus what the page shows beside it."""
    cfg = agent.site.config
    extra: dict[str, Any] = {
        "gateway": {"id": cfg.gateway.id, "site": cfg.gateway.site},
        "broker": f"{cfg.uplink.mqtt.host}:{cfg.uplink.mqtt.port}",
        "device_info": {
            d.name: {"driver": d.driver, "poll_s": d.poll,
                     "units": {name: unit for name, unit in
                               zip(d.tag_names(), d.tag_values("unit"), strict=True) if unit}}
            for d in agent.site.devices
        },
        "problems": shared.problems.items(),
    }
    # Active alarms, {device: [alarm, ...]}, once the processing stage has
    # them (the analytics work); until then the page says "not available".
    active = getattr(agent.processing, "active_alarms", None)
    if callable(active):
        extra["alarms"] = active()
    data: dict[str, Any] = _finite(snapshot(agent, shared.cpu, **extra))
    return data


class HttpServer:
    def __init__(self, agent: Agent, cfg: HttpConfig, shared: Shared) -> None:
        self.agent = agent
        self.shared = shared
        self.host, self.port = split_listen(cfg.listen)
        self.token = cfg.token.get_secret_value() if cfg.token is not None else None
        self._server: asyncio.Server | None = None
        self._active = 0
        # Imported here, not at the top: prometheus_client loads only with `http:`.
        from agent.runtime.http.metrics import build_registry

        self.registry = build_registry(agent, shared)

    @property
    def bound_port(self) -> int:
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port,
                                                  limit=MAX_HEAD)
        log.info("http: status page and metrics on http://%s:%d/%s", self.host, self.bound_port,
                 " (token required)" if self.token else "")

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._active += 1
        try:
            if self._active > MAX_CONNECTIONS:
                await self._send(writer, 503, b"busy\n", "text/plain; charset=utf-8")
                return
            try:
                async with asyncio.timeout(READ_TIMEOUT):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                    ConnectionError):
                return
            status, body, ctype, extra = self._respond(head)
            await self._send(writer, status, body, ctype, extra,
                             head_only=head.startswith(b"HEAD "))
        except Exception:  # a bug answering one request must not end the server
            log.exception("http: request failed")
        finally:
            self._active -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def _respond(self, head: bytes) -> tuple[int, bytes, str, dict[str, str]]:
        text = "text/plain; charset=utf-8"
        try:
            lines = head.decode("latin-1").split("\r\n")
            method, target, _version = lines[0].split(" ")
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
        except ValueError:
            return 400, b"bad request\n", text, {}
        path, _, query = target.partition("?")
        self.shared.requests[path if path in ROUTES else "other"] += 1
        if method not in ("GET", "HEAD"):
            return 405, b"read-only: GET only\n", text, {"Allow": "GET, HEAD"}
        if path == "/favicon.ico":
            # Browsers ask for it without the page's ?token=: answering before
            # the check keeps the unauthorized counter about real refusals.
            return 204, b"", text, {}
        if not token_ok(self.token, headers, query):
            self.shared.unauthorized += 1
            return 401, b"token required\n", text, {"WWW-Authenticate": 'Bearer realm="edge-agent"'}
        if path == "/metrics":
            from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

            return 200, generate_latest(self.registry), CONTENT_TYPE_LATEST, {}
        if path == "/api/status":
            data = status_data(self.agent, self.shared)
            body = json.dumps(data, separators=(",", ":"), default=str).encode()
            return 200, body, "application/json", {}
        if path == "/":
            from agent.runtime.http.page import CSP, render_page

            html = render_page(status_data(self.agent, self.shared))
            return 200, html.encode(), "text/html; charset=utf-8", {
                "Content-Security-Policy": CSP}
        return 404, b"not found: try /, /metrics or /api/status\n", text, {}

    async def _send(self, writer: asyncio.StreamWriter, status: int, body: bytes, ctype: str,
                    extra: dict[str, str] | None = None, *, head_only: bool = False) -> None:
        headers = {
            "Content-Type": ctype,
            "Content-Length": str(len(body)),
            "Cache-Control": "no-store",
            "X-Content-Type-Options": "nosniff",
            "Connection": "close",
            **(extra or {}),
        }
        out = f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        out += "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
        writer.write(out.encode("latin-1") + (b"" if head_only else body))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
