"""Open one connected asyncua client for a device (or ``browse``).

Every way a connect can fail becomes a :class:`DeviceUnavailable` whose
message tells a technician what to do; the scheduler retries with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from agent.sdk.driver import DeviceUnavailable
from drivers.opcua.options import OpcuaConnection
from drivers.opcua.security import CertificateRefused, apply_security, default_application_uri

__all__ = ["LostCallback", "is_connection_error", "open_client", "status_name"]

LostCallback = Callable[[Exception], Coroutine[Any, Any, None]]

# asyncua logs every publish and reconnect step at INFO; the agent logs the
# outage itself, once.  Only quiet it when nobody configured it.
_asyncua_log = logging.getLogger("asyncua")
if _asyncua_log.level == logging.NOTSET:
    _asyncua_log.setLevel(logging.WARNING)


class _ConnectionNoise(logging.Filter):
    """Drop asyncua's own reports of a lost connection (a traceback from the
    publish loop, "connection is closed" warnings while closing): the driver
    turns the loss into DeviceUnavailable and the agent logs it once."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ConnectionError | OSError | TimeoutError):
            return False
        return "connection is closed" not in record.getMessage()


for _name in ("asyncua.client.ua_session", "asyncua.client.ua_session.UaSession",
              "asyncua.client.ua_client.UaClient", "asyncua.client.ua_client.UASocketProtocol",
              "asyncua.client.client"):
    logging.getLogger(_name).addFilter(_ConnectionNoise())

_LOGIN_CODES = {
    StatusCodes.BadUserAccessDenied,
    StatusCodes.BadIdentityTokenInvalid,
    StatusCodes.BadIdentityTokenRejected,
}
_CERT_CODES = {
    StatusCodes.BadCertificateUntrusted,
    StatusCodes.BadCertificateInvalid,
    StatusCodes.BadSecurityChecksFailed,
    StatusCodes.BadCertificateUriInvalid,
    StatusCodes.BadCertificateUseNotAllowed,
    StatusCodes.BadSecurityPolicyRejected,
}
# Service results that mean the session or channel is gone, not the node.
_SESSION_CODES = {
    StatusCodes.BadSessionIdInvalid,
    StatusCodes.BadSessionClosed,
    StatusCodes.BadSessionNotActivated,
    StatusCodes.BadSecureChannelIdInvalid,
    StatusCodes.BadSecureChannelClosed,
    StatusCodes.BadConnectionClosed,
    StatusCodes.BadServerHalted,
    StatusCodes.BadShutdown,
    StatusCodes.BadCommunicationError,
    StatusCodes.BadTimeout,
    StatusCodes.BadTooManySessions,
}


def status_name(code: int) -> str:
    return ua.StatusCode(code).name  # type: ignore[arg-type]


def is_connection_error(err: BaseException) -> bool:
    """True when ``err`` means the connection (not one request) is broken."""
    if isinstance(err, ConnectionError | OSError | TimeoutError):
        return True
    return isinstance(err, UaStatusCodeError) and err.code in _SESSION_CODES


def _explain(err: BaseException, conn: OpcuaConnection, state_dir: Path) -> DeviceUnavailable:
    where = conn.endpoint
    if isinstance(err, DeviceUnavailable):
        return err
    if isinstance(err, TimeoutError):
        return DeviceUnavailable(f"no answer from {where} within {conn.timeout:g}s")
    if isinstance(err, ConnectionRefusedError):
        return DeviceUnavailable(f"{where} refused the connection (server not running?)")
    if isinstance(err, OSError):
        return DeviceUnavailable(f"cannot reach {where}: {err.strerror or err}")
    if isinstance(err, UaStatusCodeError):
        name = status_name(err.code)
        if err.code in _LOGIN_CODES:
            if conn.username is None:
                return DeviceUnavailable(
                    f"{where} refused anonymous login ({name}): set username and password")
            return DeviceUnavailable(
                f"{where} refused the login of user {conn.username!r} ({name}): "
                "wrong username or password?")
        if err.code in _CERT_CODES:
            cert = state_dir / "opcua" / "client_cert.der"
            return DeviceUnavailable(
                f"{where} refused our certificate ({name}): trust {cert} on the server")
        return DeviceUnavailable(f"{where} answered {name}")
    if isinstance(err, UaError) and "certificate mismatch" in str(err).lower():
        return CertificateRefused(f"{where} answered with a certificate other than the pinned one")
    return DeviceUnavailable(f"cannot connect to {where}: {type(err).__name__}: {err}")


async def open_client(
    conn: OpcuaConnection,
    *,
    state_dir: Path,
    log: logging.Logger,
    cert_lock: asyncio.Lock,
    on_lost: LostCallback | None = None,
) -> Client:
    """A connected, activated client; raises DeviceUnavailable with a clear message."""
    client = Client(conn.endpoint, timeout=conn.timeout, watchdog_intervall=conn.keepalive)
    client.application_uri = conn.application_uri or default_application_uri()
    client.name = client.description = "edge-agent"
    client.product_uri = "urn:edge-agent"
    # A session we abandon (crash, cut cable) is freed by the server after this.
    client.session_timeout = 60_000
    client.connection_lost_callback = on_lost
    if conn.username is not None:
        client.set_user(conn.username)
        if conn.password is not None:
            client.set_password(conn.password.get_secret_value())
    try:
        await apply_security(client, conn, state_dir, log, cert_lock)
        await asyncio.wait_for(client.connect(), timeout=conn.timeout * 3)
    except BaseException as err:
        await close_client(client)
        if isinstance(err, Exception):
            raise _explain(err, conn, state_dir) from err
        raise
    return client


async def close_client(client: Client) -> None:
    """Disconnect, never raising and never hanging on a dead server."""
    if client.uaclient.state is UaClientState.CONNECTED:
        try:
            await asyncio.wait_for(client.disconnect(), timeout=2.0)
            return
        except Exception:  # noqa: S110 - a broken session may fail to close any way
            pass
    # Not (or no longer) connected: stop asyncua's watchdog tasks without
    # sending CloseSession to a server that is gone (it would log a traceback).
    with contextlib.suppress(Exception):  # expected: there is no session to close
        await asyncio.wait_for(client.close_session(), timeout=2.0)
    client.disconnect_socket()
