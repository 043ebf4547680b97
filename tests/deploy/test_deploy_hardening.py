"""The unit's MemoryDenyWriteExecute=yes must not break the agent's libraries.

systemd enforces it with seccomp, which needs systemd as PID 1. Linux 6.3+
offers the same rule per process (prctl PR_SET_MDWE: no writable+executable
mappings, no making memory executable later), so the child below turns it on
and then does what the agent does: import every protocol library, run TLS
and OPC UA crypto, a ctypes callback, SQLite in WAL mode, and psutil.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest


def _kernel_has_mdwe() -> bool:
    # Probe in a child: once set, MDWE cannot be switched off again.
    # 65 is PR_SET_MDWE, 1 PR_MDWE_REFUSE_EXEC_GAIN.
    probe = "import ctypes,sys; sys.exit(ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) != 0)"
    return subprocess.run([sys.executable, "-c", probe], timeout=60).returncode == 0


_CHILD = textwrap.dedent(
    """
    import ctypes, mmap, sqlite3, ssl, sys
    assert ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) == 0
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit("MDWE not enforced: this test would prove nothing")
    except PermissionError:
        pass

    import aiomqtt, asyncua, pymodbus.client, pymodbus.server, serial_asyncio_fast  # noqa
    import psutil, pydantic, yaml
    from importlib.metadata import entry_points
    for ep in entry_points(group="edge_agent.drivers"):
        ep.load()
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sig = key.sign(b"opc ua", padding.PKCS1v15(), hashes.SHA256())
    key.public_key().verify(sig, b"opc ua", padding.PKCS1v15(), hashes.SHA256())
    ssl.create_default_context()
    db = sqlite3.connect(sys.argv[1])
    assert db.execute("pragma journal_mode=wal").fetchone()[0] == "wal"
    db.execute("create table t(x)"); db.execute("insert into t values (1)"); db.commit()
    psutil.Process().memory_info(); psutil.cpu_percent(); psutil.virtual_memory()
    cb = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
    assert cb(1) == 2
    print("ok")
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="Linux only")
def test_libraries_work_without_writable_executable_memory(tmp_path: Path) -> None:
    if not _kernel_has_mdwe():
        pytest.skip(f"kernel {os.uname().release} has no PR_SET_MDWE (needs Linux 6.3+)")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / "buffer.db")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr
