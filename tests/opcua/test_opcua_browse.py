# asyncua annotates its constructors with NewTypes (ua.Int16, ua.String, ...) and
# re-exports without __all__; plain ints/strs are what it takes at run time.
# mypy: disable-error-code="arg-type, attr-defined"
"""``edge-agent browse``: output pastes into a site file and reads the right nodes."""

from __future__ import annotations

import asyncio
import contextlib
import io
import textwrap
from pathlib import Path
from typing import Any

from asyncua import ua

from agent.cli.main import build_parser
from agent.config.load import parse_site
from drivers.opcua.driver import OpcuaDriver
from drivers.opcua.simulator import DEMO_VARIABLES, NS_URI, start_server

HEAD = "gateway: {id: gw-1, site: plant}\nuplink: {mqtt: {url: mqtt://127.0.0.1}}\ndevices:\n"


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    args = build_parser().parse_args(argv)
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = args.func(args)
    return code, out.getvalue(), err.getvalue()


async def test_browse_block_loads_and_reads_the_browsed_nodes(
    tmp_path: Path, context: Any
) -> None:
    # Another namespace first, so index and URI disagree (ns=3 for ours).
    sim = await start_server(namespaces=("urn:vendor:other", NS_URI))
    folder = sim.server.get_node(ua.NodeId("Plant", sim.ns))
    deep = await folder.add_object(ua.NodeId("Deep", sim.ns), "Deep")
    weird = await deep.add_variable(ua.NodeId(1234, sim.ns), "Weird name/with spaces", [1, 2, 3])
    await weird.write_attribute(ua.AttributeIds.ValueRank,
                                ua.DataValue(ua.Variant(1, ua.VariantType.Int32)))
    await sim.set("Line1.Speed", 12.5, ua.VariantType.Double)
    try:
        argv = ["browse", sim.endpoint, "--state-dir", str(tmp_path)]
        code, out, err = await asyncio.to_thread(run_cli, argv)
        assert code == 0, err
        assert f'"nsu={NS_URI};s=Line1.Speed"}}  # Double, writable on the server' in out
        assert f'"nsu={NS_URI};i=1234"}}  # Int64[]' in out
        assert "i=2256" not in out  # the server's own diagnostics are skipped
        device = textwrap.dedent(f"""\
            - name: browsed
              driver: opcua
              connection: {{endpoint: "{sim.endpoint}"}}
              mode: poll
            """) + textwrap.indent(out, "  ")  # pasted at the device's key level
        site = parse_site(HEAD + textwrap.indent(device, "  "), "browsed.yaml")
        cfg, = site.devices
        names = cfg.tag_names()
        assert names == [f"Plant.{n}" for n in DEMO_VARIABLES] + ["Plant.Deep.Weird_name_with_spaces"]
        drv = OpcuaDriver(cfg, context)
        await drv.connect()
        try:
            sample = await drv.read()
        finally:
            await drv.close()
        assert sample.bad == {}
        assert sample.values["Plant.Line1.Speed"] == 12.5
        assert sample.values["Plant.Deep.Weird_name_with_spaces"] == [1, 2, 3]

        code, out, _ = await asyncio.to_thread(
            run_cli, [*argv, "--root", f"nsu={NS_URI};s=Deep", "--depth", "1"])
        assert code == 0 and out.count("node:") == 1
    finally:
        await sim.stop()


async def test_browse_errors_are_one_clear_line(tmp_path: Path) -> None:
    from drivers.opcua.simulator import free_port

    dead = f"opc.tcp://127.0.0.1:{free_port()}"
    code, out, err = await asyncio.to_thread(
        run_cli, ["browse", dead, "--state-dir", str(tmp_path), "--timeout", "2"])
    assert (code, out) == (1, "")
    assert err.strip() == f"edge-agent browse: {dead} refused the connection (server not running?)"
    code, _, err = await asyncio.to_thread(
        run_cli, ["browse", dead, "--security", "Basic256Sha256_Sign"])
    assert code == 2 and "needs the server certificate pinned" in err
