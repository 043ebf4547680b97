"""The house's rules, checked: imports run one way, drivers import only ``agent.sdk``.

Rooms, top to bottom: sdk, config, pipeline, runtime, management, cli. A
module may import its own room and the rooms above it, never one below
(a ``TYPE_CHECKING`` import included: it is still a dependency a reader
has to follow).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ["sdk", "config", "pipeline", "runtime", "management", "cli"]
# Deprecated re-exports for third-party drivers written before agent.sdk.
SHIMS = {"agent/driver.py", "agent/readings.py", "agent/config/types.py"}


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
    return found


def _room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "agent" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in ROOMS else None


def test_agent_imports_run_one_way() -> None:
    upward: list[str] = []
    for path in sorted((ROOT / "agent").rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel in SHIMS:
            continue
        own = _room(".".join(path.relative_to(ROOT).with_suffix("").parts))
        if own is None:
            continue
        for module in _imports(path):
            target = _room(module)
            if target is not None and ROOMS.index(target) > ROOMS.index(own):
                upward.append(f"{rel}: {module}")
    assert upward == []


def test_every_agent_module_lives_in_a_room() -> None:
    loose = [p.name for p in (ROOT / "agent").glob("*.py")
             if p.name != "__init__.py" and p.relative_to(ROOT).as_posix() not in SHIMS]
    assert loose == []


def test_drivers_import_only_the_sdk() -> None:
    outside: list[str] = []
    for path in sorted((ROOT / "drivers").rglob("*.py")):
        for module in _imports(path):
            if module == "agent" or (module.startswith("agent.") and module != "agent.sdk"
                                     and not module.startswith("agent.sdk.")):
                outside.append(f"{path.relative_to(ROOT).as_posix()}: {module}")
    assert outside == []
