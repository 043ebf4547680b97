"""Secure channels: our own certificate, and pinning the server's.

- The client certificate and key are generated on first use into
  ``<state_dir>/opcua/`` (``client_cert.der``, ``client_key.pem``), with the
  application URI in the subject alternative names as OPC UA requires; an
  expired certificate or one for another URI is regenerated.  The server
  must trust ``client_cert.der`` (most servers put it in a "rejected"
  folder first, for an administrator to move).
- The server certificate is pinned: the one from ``server_certificate:``,
  or with ``trust_on_first_use: true`` the one seen on the first connect,
  recorded in ``<state_dir>/opcua/trusted/``.  Any other certificate is
  refused, before a password is sent.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import socket
from pathlib import Path
from urllib.parse import urlsplit

from asyncua import ua
from asyncua.client.client import Client
from asyncua.crypto import security_policies
from asyncua.crypto.cert_gen import setup_self_signed_certificate
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from agent.sdk.driver import DeviceUnavailable
from drivers.opcua.options import OpcuaConnection, split_security

__all__ = ["CertificateRefused", "apply_security", "default_application_uri", "fingerprint"]

# Config names -> asyncua classes (the URIs are the classes' URI attribute).
_POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128_Sha256_RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256_Sha256_RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}
_MODES = {
    "Sign": ua.MessageSecurityMode.Sign,
    "SignAndEncrypt": ua.MessageSecurityMode.SignAndEncrypt,
}


class CertificateRefused(DeviceUnavailable):
    """The server showed a certificate other than the pinned one."""


def default_application_uri() -> str:
    return f"urn:{socket.gethostname()}:edge-agent"


def fingerprint(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def _first_der(blob: bytes) -> bytes:
    # Servers may send a chain; the first DER SEQUENCE is their own certificate.
    if len(blob) > 4 and blob[0] == 0x30 and blob[1] == 0x82:
        return blob[: int.from_bytes(blob[2:4], "big") + 4]
    return blob


def _load_der(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DeviceUnavailable(f"cannot read server_certificate {path}: {err.strerror}") from None
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
        return x509.load_der_x509_certificate(_first_der(data)).public_bytes(Encoding.DER)
    except ValueError:
        raise DeviceUnavailable(
            f"server_certificate {path} is not a DER or PEM certificate") from None


def _tofu_path(state: Path, endpoint: str) -> Path:
    parts = urlsplit(endpoint)
    slug = re.sub(r"[^A-Za-z0-9.-]+", "_", f"{parts.hostname}_{parts.port or 4840}")
    return state / "trusted" / f"{slug}-{hashlib.sha256(endpoint.encode()).hexdigest()[:8]}.der"


async def _own_certificate(state: Path, app_uri: str, lock: asyncio.Lock) -> tuple[Path, Path]:
    cert, key = state / "client_cert.der", state / "client_key.pem"
    async with lock:  # two devices starting together must not write the key twice
        await asyncio.to_thread(state.mkdir, parents=True, exist_ok=True, mode=0o700)
        await setup_self_signed_certificate(
            key, cert, app_uri, socket.gethostname(),
            [ExtendedKeyUsageOID.CLIENT_AUTH], {"organizationName": "edge-agent"},
        )
        os.chmod(key, 0o600)
    return cert, key


async def _presented(client: Client, policy_uri: str, mode: ua.MessageSecurityMode,
                     security: str) -> bytes:
    endpoints = await client.connect_and_get_server_endpoints()
    for ep in endpoints:
        if ep.SecurityPolicyUri == policy_uri and ep.SecurityMode == mode:
            return _first_der(ep.ServerCertificate)
    offered = sorted({"None" if ep.SecurityMode == ua.MessageSecurityMode.None_ else
                      f"{ep.SecurityPolicyUri.rpartition('#')[2]}_{ep.SecurityMode.name}"
                      for ep in endpoints})
    raise DeviceUnavailable(
        f"server offers no {security} endpoint (it offers: {', '.join(offered)})")


def _check_pin(conn: OpcuaConnection, state: Path, shown: bytes, log: logging.Logger) -> bytes:
    if conn.server_certificate is not None:
        pinned = _load_der(conn.server_certificate)
        if pinned != shown:
            raise CertificateRefused(
                f"server certificate refused: the server shows SHA-256 {fingerprint(shown)}, "
                f"{conn.server_certificate} has {fingerprint(pinned)}; if the server's certificate "
                "was renewed on purpose, replace that file",
            )
        return pinned
    path = _tofu_path(state, conn.endpoint)
    if path.exists():
        pinned = path.read_bytes()
        if pinned != shown:
            raise CertificateRefused(
                f"server certificate changed since it was first trusted: the server shows SHA-256 "
                f"{fingerprint(shown)}, trusted {fingerprint(pinned)}; if the change is expected, "
                f"delete {path} to trust the new one",
            )
        return pinned
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".tmp")
    partial.write_bytes(shown)
    partial.replace(path)  # never a half-written pin after a power cut
    log.warning("trusting the certificate of %s on first use: SHA-256 %s (recorded in %s)",
                conn.endpoint, fingerprint(shown), path)
    return shown


async def apply_security(client: Client, conn: OpcuaConnection, state_dir: Path,
                         log: logging.Logger, lock: asyncio.Lock) -> None:
    """Configure ``client`` for ``conn.security`` (no-op for None); raises DeviceUnavailable."""
    if conn.security == "None":
        return
    policy_name, mode_name = split_security(conn.security)
    policy, mode = _POLICIES[policy_name], _MODES[mode_name]
    state = state_dir / "opcua"
    try:
        cert, key = await _own_certificate(state, client.application_uri, lock)
    except OSError as err:
        raise DeviceUnavailable(f"cannot keep our OPC UA certificate in {state}: "
                                f"{err.strerror or err}") from None
    shown = await _presented(client, policy.URI, mode, conn.security)
    try:
        pinned = _check_pin(conn, state, shown, log)
    except OSError as err:
        raise DeviceUnavailable(f"cannot record the server certificate in {state}: "
                                f"{err.strerror or err}") from None
    await client.set_security(policy, cert, key, server_certificate=pinned, mode=mode)
