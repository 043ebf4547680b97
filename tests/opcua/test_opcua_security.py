"""Secure channels, user login, client certificate, server certificate pinning."""

from __future__ import annotations

import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua
from cryptography import x509
from pydantic import SecretStr

from agent.sdk.driver import DeviceUnavailable
from drivers.opcua.driver import OpcuaDriver
from drivers.opcua.security import CertificateRefused, default_application_uri
from drivers.opcua.simulator import SimServer, free_port, start_server

pytestmark = pytest.mark.asyncio(loop_scope="module")
NS = "urn:edge-agent:demo"
TAGS = [{"name": "a", "node": f"nsu={NS};s=A"}]
USERS = {"edge": "s3cret-pw"}


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def secure(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[SimServer]:
    sim = await start_server(variables={"A": (ua.VariantType.Double, 4.5)}, users=USERS,
                             cert_dir=tmp_path_factory.mktemp("server-pki"))
    yield sim
    await sim.stop()


def conn(security: str, password: str = USERS["edge"], **extra: Any) -> dict[str, Any]:
    return {"connection": {"security": security, "username": "edge",
                           "password": SecretStr(password), **extra}}


@pytest.mark.parametrize("security", [
    "Basic256Sha256_SignAndEncrypt", "Basic256Sha256_Sign",
    "Aes128_Sha256_RsaOaep_SignAndEncrypt", "Aes128_Sha256_RsaOaep_Sign",
    "Aes256_Sha256_RsaPss_SignAndEncrypt", "Aes256_Sha256_RsaPss_Sign",
])
async def test_every_policy_with_a_user(
    secure: SimServer, context: Any, make_device: Any, security: str
) -> None:
    assert secure.certificate is not None
    cfg = make_device(secure.endpoint, TAGS, mode="poll",
                      **conn(security, server_certificate=str(secure.certificate)))
    drv = OpcuaDriver(cfg, context)
    await drv.connect()
    try:
        assert (await drv.read()).values == {"a": 4.5}
    finally:
        await drv.close()


async def test_client_certificate_is_generated_with_our_application_uri(
    secure: SimServer, context: Any, make_device: Any
) -> None:
    cfg = make_device(secure.endpoint, TAGS, mode="poll",
                      **conn("Basic256Sha256_SignAndEncrypt", trust_on_first_use=True))
    drv = OpcuaDriver(cfg, context)
    await drv.connect()
    await drv.close()
    pki = context.state_dir / "opcua"
    cert = x509.load_der_x509_certificate((pki / "client_cert.der").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [default_application_uri()]
    assert stat.S_IMODE((pki / "client_key.pem").stat().st_mode) == 0o600
    before = (pki / "client_cert.der").read_bytes()
    await drv.connect()  # a second start reuses the pair
    await drv.close()
    assert (pki / "client_cert.der").read_bytes() == before


async def test_wrong_password_is_a_clear_error(
    secure: SimServer, context: Any, make_device: Any
) -> None:
    cfg = make_device(secure.endpoint, TAGS, mode="poll",
                      **conn("Basic256Sha256_SignAndEncrypt", password="guess",
                             server_certificate=str(secure.certificate)))
    drv = OpcuaDriver(cfg, context)
    with pytest.raises(DeviceUnavailable) as err:
        await drv.connect()
    await drv.close()
    assert "refused the login of user 'edge'" in str(err.value)
    assert "wrong username or password" in str(err.value)
    assert "guess" not in str(err.value)


async def test_anonymous_refused_says_what_to_set(
    secure: SimServer, context: Any, make_device: Any
) -> None:
    cfg = make_device(secure.endpoint, TAGS, mode="poll", connection={
        "security": "Basic256Sha256_SignAndEncrypt", "server_certificate": str(secure.certificate)})
    drv = OpcuaDriver(cfg, context)
    with pytest.raises(DeviceUnavailable, match=r"refused anonymous login.*set username"):
        await drv.connect()
    await drv.close()


async def test_pinned_file_of_another_server_is_refused(
    secure: SimServer, context: Any, make_device: Any, tmp_path: Path
) -> None:
    other = await start_server(variables={}, cert_dir=tmp_path / "other-pki")
    await other.stop()
    assert other.certificate is not None
    cfg = make_device(secure.endpoint, TAGS, mode="poll",
                      **conn("Basic256Sha256_SignAndEncrypt",
                             server_certificate=str(other.certificate)))
    drv = OpcuaDriver(cfg, context)
    with pytest.raises(CertificateRefused, match=r"server certificate refused.*replace that file"):
        await drv.connect()
    await drv.close()


async def test_changed_certificate_after_first_use_is_refused(
    context: Any, make_device: Any, tmp_path: Path
) -> None:
    port = free_port()
    sim = await start_server(port, variables={"A": (ua.VariantType.Double, 1.0)},
                             users=USERS, cert_dir=tmp_path / "pki-1")
    cfg = make_device(sim.endpoint, TAGS, mode="poll",
                      **conn("Aes128_Sha256_RsaOaep_SignAndEncrypt", trust_on_first_use=True))
    drv = OpcuaDriver(cfg, context)
    try:
        await drv.connect()
        assert (await drv.read()).values == {"a": 1.0}
        await drv.close()
        pins = list((context.state_dir / "opcua" / "trusted").iterdir())
        assert sim.certificate is not None
        assert len(pins) == 1 and pins[0].read_bytes() == sim.certificate.read_bytes()
        await sim.stop()
        # Same address, new certificate: an impostor or a re-installed server.
        sim = await start_server(port, variables={"A": (ua.VariantType.Double, 1.0)},
                                 users=USERS, cert_dir=tmp_path / "pki-2")
        with pytest.raises(CertificateRefused, match="changed since it was first trusted") as err:
            await drv.connect()
        assert str(pins[0]) in str(err.value)
        await drv.close()
        pins[0].unlink()  # what the message tells the technician to do
        await drv.connect()
        assert (await drv.read()).values == {"a": 1.0}
    finally:
        await drv.close()
        await sim.stop()


async def test_policy_the_server_does_not_offer(
    context: Any, make_device: Any, tmp_path: Path
) -> None:
    sim = await start_server(variables={"A": (ua.VariantType.Double, 1.0)})  # None only
    cfg = make_device(sim.endpoint, TAGS, mode="poll", connection={
        "security": "Basic256Sha256_Sign", "trust_on_first_use": True})
    drv = OpcuaDriver(cfg, context)
    try:
        with pytest.raises(DeviceUnavailable, match="offers no Basic256Sha256_Sign endpoint"):
            await drv.connect()
    finally:
        await drv.close()
        await sim.stop()


async def test_unwritable_state_dir_is_named(
    secure: SimServer, make_device: Any, tmp_path: Path
) -> None:
    import logging

    from agent.sdk.counters import DeviceCounters
    from agent.sdk.driver import DriverContext

    locked = tmp_path / "not-a-directory"  # fails for root too, unlike permissions
    locked.write_text("")
    ctx = DriverContext(state_dir=locked, counters=DeviceCounters(), log=logging.getLogger("t"))
    cfg = make_device(secure.endpoint, TAGS, mode="poll",
                      **conn("Basic256Sha256_Sign", trust_on_first_use=True))
    drv = OpcuaDriver(cfg, ctx)
    with pytest.raises(DeviceUnavailable, match=f"cannot keep our OPC UA certificate in {locked}"):
        await drv.connect()
    await drv.close()
