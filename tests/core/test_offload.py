"""Site files validated in a forked child (agent.config.offload): same answer, less memory."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from agent.config import offload
from agent.config.compact import compact_site
from agent.config.load import ConfigErrors, Site, load_site, parse_site
from agent.config.store import ConfigStore
from agent.runtime.logs import register_secrets_from
from agent.sdk.tag_table import TagTable

ROOT = Path(__file__).resolve().parents[2]


def _site_text(devices: int = 2, tags: int = 3, password: str | None = None,
               **tag_keys: object) -> str:
    mqtt: dict[str, object] = {"url": "mqtt://127.0.0.1:1"}
    if password is not None:
        mqtt.update(username="u", password=password)
    return yaml.safe_dump({
        "gateway": {"id": "gw", "site": "s"}, "uplink": {"mqtt": mqtt},
        "devices": [{"name": f"d{i}", "driver": "modbus", "poll": "1s",
                     "connection": {"transport": "tcp", "host": "127.0.0.1", "port": 5020 + i},
                     "tags": [{"name": f"t{j}", "address": f"HR{j}", "type": "uint16",
                               **tag_keys} for j in range(tags)]} for i in range(devices)]})


def test_the_child_answers_what_the_loader_answers(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OFFLOAD_TEST_PW", "s3cret-pw")
    path = tmp_path / "site.yaml"
    path.write_text(_site_text(password="${env:OFFLOAD_TEST_PW}"))
    parent = os.getpid()

    def load() -> tuple[int, Site]:
        return os.getpid(), load_site(path)

    pid, site = offload.off_process(load)
    assert pid != parent  # validated in another process
    here = load_site(path)
    assert site.hash == here.hash and site.source == str(path)
    assert site.config == here.config and site.devices == here.devices
    # Resolved secrets stay marked as such, so the log filter still learns them.
    assert site.config.uplink.mqtt.password is not None
    assert register_secrets_from(site) == register_secrets_from(here) >= 1


def test_problems_come_back_as_config_errors(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(_site_text().replace("poll: 1s", "pol: 1s", 1))
    with pytest.raises(ConfigErrors) as here:
        load_site(path)
    with pytest.raises(ConfigErrors) as there:
        offload.off_process(lambda: load_site(path))
    assert there.value.render() == here.value.render()
    assert "unknown key 'pol'" in there.value.render()
    assert there.value.source == str(path)


def test_a_child_that_dies_means_validating_here(caplog: pytest.LogCaptureFixture) -> None:
    parent = os.getpid()

    def load() -> int:
        if os.getpid() != parent:
            os._exit(3)  # killed mid-validation (the OOM killer, say)
        return 42

    assert offload.off_process(load) == 42
    assert "gave no answer" in caplog.text


def test_a_child_past_the_deadline_is_killed(monkeypatch: pytest.MonkeyPatch,
                                             caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(offload, "DEADLINE_S", 0.5)
    parent = os.getpid()

    def load() -> str:
        if os.getpid() != parent:
            time.sleep(600)  # hung on a lock another thread held at the fork
        return "here"

    started = time.monotonic()
    assert offload.off_process(load) == "here"
    assert time.monotonic() - started < 30
    assert "killed" in caplog.text


def test_without_fork_it_validates_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(os, "fork")
    assert offload.off_process(os.getpid) == os.getpid()


_PROBE = """
import sys
from pathlib import Path
from agent.config.plugins import load_plugins
from agent.config.store import ConfigStore

def mb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise SystemExit("no " + key)

load_plugins()
before = mb("VmHWM")
site = ConfigStore(Path(sys.argv[1]), Path(sys.argv[2])).load_site()
assert sum(len(d.tags) for d in site.devices) == 10000
print(mb("VmHWM") - before)
"""


def test_a_big_site_leaves_no_peak_in_the_agent(tmp_path: Path) -> None:
    """10,000 tags: in-process the high-water mark grows ~38 MB, through the child ~13 MB."""
    path = tmp_path / "site.yaml"
    path.write_text(_site_text(devices=10, tags=1000))
    out = subprocess.run([sys.executable, "-c", _PROBE, str(tmp_path), str(path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, check=True)
    grown = float(out.stdout.strip().splitlines()[-1])
    assert grown < 25, f"peak RSS grew {grown:.1f} MB while loading 10,000 tags"


def test_store_loads_through_the_child(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(_site_text())
    site = ConfigStore(tmp_path, path).load_site()
    assert site.hash == parse_site(path.read_text(), str(path)).hash


def test_compacted_tags_share_equal_values_and_stay_equal(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(_site_text(devices=3, tags=50, scale=1))
    site = load_site(path)
    assert all(isinstance(d.tags, TagTable) for d in site.devices)  # validation compacts
    # The same tags as models, one per tag, as validation made them before.
    plain = [d.model_copy(update={"tags": [type(t).model_validate(t.model_dump()) for t in d.tags]})
             for d in site.devices]
    assert all(isinstance(d.tags, list) for d in plain)
    assert list(site.devices) == plain and plain == list(site.devices)
    assert [d.model_dump() for d in site.devices] == [d.model_dump() for d in plain]
    tags = [t for d in site.devices for t in d.tags]
    assert len({id(t.__dict__["type"]) for t in tags}) == 1  # one "uint16" for all
    assert all(type(t.__dict__["scale"]) is float for t in tags)  # 1 stays 1.0, not int 1
    assert "scale" in tags[0].model_fields_set and "order" not in tags[0].model_fields_set
    # Compacting again changes nothing.
    compact_site(site)
    assert list(site.devices) == plain
    # What the agent gets from the child is the same.
    there = offload.off_process(lambda: load_site(path))
    assert there.devices == site.devices
    assert all(isinstance(d.tags, TagTable) for d in there.devices)


def test_a_reload_keeps_the_running_objects_of_unchanged_devices(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(_site_text(devices=3, tags=20))
    running = load_site(path)
    text = _site_text(devices=3, tags=20).replace("port: 5021", "port: 5099")
    new = parse_site(text, str(path))
    site = offload.reuse_running(new, running)
    assert site.text == text and site.hash == new.hash and site.config is new.config
    assert site.devices == new.devices
    assert site.devices[0] is running.devices[0] and site.devices[2] is running.devices[2]
    assert site.devices[1] is new.devices[1]  # the changed one is the new config
    assert offload.reuse_running(new, None) is new
    # Nothing equal: the site is returned as it came.
    other = parse_site(text.replace("127.0.0.1", "127.0.0.2"), str(path))
    assert offload.reuse_running(other, running) is other
