"""Log lines: journald-friendly text, JSON for shippers, secrets never shown."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.runtime import logs

ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)
    logs._clear_secrets()


def _setup(fmt: str, level: str = "debug") -> io.StringIO:
    out = io.StringIO()
    logs.setup_logging(level, fmt, stream=out)
    return out


def test_text_line_shape() -> None:
    out = _setup("text")
    logging.getLogger("agent.scheduler").info("started %d devices", 3)
    logging.getLogger("drivers.modbus.driver").warning(
        "timeout reading %s", "HR100", extra={"device": "press-1"}
    )
    lines = out.getvalue().splitlines()
    assert re.fullmatch(ISO + r" INFO scheduler: started 3 devices", lines[0]), lines[0]
    expected = ISO + r" WARNING modbus\.driver \[press-1\]: timeout reading HR100"
    assert re.fullmatch(expected, lines[1])


def test_json_lines_parse() -> None:
    out = _setup("json")
    log = logging.getLogger("agent.uplink")
    log.info('connected to "broker"', extra={"device": None})
    try:
        raise ConnectionError("broken pipe")
    except ConnectionError:
        log.exception("send failed", extra={"device": "press-1"})
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, "a traceback must stay inside its JSON line"
    first, second = (json.loads(line) for line in lines)
    assert set(first) == {"ts", "level", "logger", "message", "device", "exc"}
    assert first["level"] == "info" and first["logger"] == "agent.uplink"
    assert first["message"] == 'connected to "broker"'
    assert first["device"] is None and first["exc"] is None
    assert re.fullmatch(ISO, first["ts"])
    assert second["level"] == "error" and second["device"] == "press-1"
    assert "ConnectionError: broken pipe" in second["exc"]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_registered_secrets_never_appear(fmt: str) -> None:
    secret = 'p@ss"w\\rd-91x'
    other = "s3cr3t-token-abc"
    logs.register_secret(secret)
    logs.register_secret(other)
    logs.register_secret("")  # ignored, must not blank every line
    out = _setup(fmt)
    log = logging.getLogger("agent.config")
    log.info("password is %s", secret)
    log.info("repr: %r", {"password": secret})
    log.info("url mqtt://gw:%s@broker", "p%40ss%22w%5Crd-91x")
    log.warning("dev", extra={"device": other})
    try:
        raise RuntimeError(f"login refused for {other}")
    except RuntimeError:
        log.exception("connect failed")
    logging.getLogger("pymodbus").error("library says %s", other)
    text = out.getvalue()
    assert "***" in text
    for needle in (secret, other, repr(secret)[1:-1], json.dumps(secret)[1:-1], "p%40ss"):
        assert needle not in text, needle
    # Every line (JSON: every object) was still written.
    assert len([ln for ln in text.splitlines() if "login refused" not in ln]) >= 5
    if fmt == "json":
        for line in text.splitlines():
            json.loads(line)


def test_longer_secret_redacted_whole() -> None:
    logs.register_secret("abc")
    logs.register_secret("abcdef")
    out = _setup("text")
    logging.getLogger("agent.x").info("value abcdef")
    assert out.getvalue().rstrip().endswith("value ***")


def test_set_level_and_noisy_libraries() -> None:
    out = _setup("text", "info")
    logging.getLogger("agent.a").debug("hidden")
    logging.getLogger("asyncua.client").info("session chatter")
    logs.set_level("debug")
    logging.getLogger("agent.a").debug("shown")
    logging.getLogger("asyncua.client").info("still quiet")
    logs.set_level("DEBUG", logger="asyncua")
    logging.getLogger("asyncua.client").debug("now asked for")
    logs.set_level("warning")
    logging.getLogger("agent.a").info("quiet again")
    text = out.getvalue()
    assert "hidden" not in text and "session chatter" not in text
    assert "shown" in text and "still quiet" not in text and "now asked for" in text
    assert "quiet again" not in text


def test_bad_level_and_format() -> None:
    with pytest.raises(ValueError, match="unknown log level 'verbose'"):
        logs.set_level("verbose")
    with pytest.raises(ValueError, match="unknown log format"):
        logs.setup_logging("info", "xml", stream=io.StringIO())


def test_setup_twice_does_not_duplicate() -> None:
    out = io.StringIO()
    logs.setup_logging("info", "text", stream=out)
    logs.setup_logging("info", "text", stream=out)
    logging.getLogger("agent.x").info("once")
    assert out.getvalue().count("once") == 1


_CHILD = textwrap.dedent(
    """
    import logging
    from agent.runtime.logs import setup_logging
    setup_logging("info")
    log = logging.getLogger("agent.uplink")
    log.warning("lost broker", extra={"device": "press-1"})
    try:
        1 / 0
    except ZeroDivisionError:
        log.exception("boom")
    """
)


def _run_child(tmp_path: Path, journal_stream: str | None) -> list[str]:
    err = tmp_path / "stderr.txt"
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    with err.open("wb") as fh:
        if journal_stream == "match":
            st = os.fstat(fh.fileno())
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        elif journal_stream is not None:
            env["JOURNAL_STREAM"] = journal_stream
        subprocess.run([sys.executable, "-c", _CHILD], stderr=fh, env=env, check=True, timeout=60)
    return err.read_text().splitlines()


def test_under_journald_no_timestamp_and_priorities(tmp_path: Path) -> None:
    lines = _run_child(tmp_path, "match")
    assert lines[0] == "<4>WARNING uplink [press-1]: lost broker"
    assert lines[1] == "<3>ERROR uplink: boom"
    # Traceback lines keep the error priority (journalctl -p err shows them).
    assert len(lines) > 3 and all(ln.startswith("<3>") for ln in lines[1:])
    assert lines[-1] == "<3>ZeroDivisionError: division by zero"


def test_outside_journald_has_timestamps(tmp_path: Path) -> None:
    # An inherited JOURNAL_STREAM for another stream does not count.
    for value in (None, "1:2"):
        lines = _run_child(tmp_path, value)
        assert re.fullmatch(ISO + r" WARNING uplink \[press-1\]: lost broker", lines[0])
        assert not lines[1].startswith("<")


def test_secrets_of_a_loaded_site_are_all_registered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Through the real loader: the MQTT password and a driver's own field."""
    from agent.config.load import Site, parse_site

    monkeypatch.setenv("T_MQTT_PW", "mqtt-pw-7f3a")
    monkeypatch.setenv("T_OPC_PW", "opcua-pw-91c2")
    site = parse_site(
        textwrap.dedent(
            """
            gateway: {id: gw-1, site: s}
            uplink: {mqtt: {url: "mqtt://127.0.0.1:1883", username: u,
                            password: "${env:T_MQTT_PW}"}}
            devices:
              - name: plc
                driver: opcua
                connection: {endpoint: "opc.tcp://127.0.0.1:4840", username: edge,
                             password: "${env:T_OPC_PW}"}
                tags: [{name: speed, node: "ns=2;s=Speed"}]
            """
        ),
        "site.yaml",
    )
    assert isinstance(site, Site)
    assert logs.register_secrets_from(site) >= 2
    out = _setup("text")
    logging.getLogger("drivers.opcua").error("login mqtt-pw-7f3a / opcua-pw-91c2 refused")
    assert out.getvalue().rstrip().endswith("login *** / *** refused")


def test_watchdog_abort_prints_stacks(tmp_path: Path) -> None:
    """systemd's watchdog kills with SIGABRT: the journal gets every stack."""
    child = textwrap.dedent(
        """
        import os, signal
        from agent.runtime.logs import setup_logging
        setup_logging("info")
        def stuck_poll_loop():
            os.kill(os.getpid(), signal.SIGABRT)
        stuck_poll_loop()
        """
    )
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode != 0
    assert "Fatal Python error: Aborted" in proc.stderr
    assert "stuck_poll_loop" in proc.stderr
