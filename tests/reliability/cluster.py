"""A PostgreSQL cluster of a test's own, to restart at will: ``initdb`` into a temporary
folder, a free port, ``pg_ctl`` to start, restart and stop it. The shared server on 5432 is
never touched.

``initdb`` refuses to run as root; as root (CI runs ``.ci/run`` so) every command runs as the
``postgres`` OS user, in a folder that user owns. The binaries are found on ``PATH``, else in
the newest ``/usr/lib/postgresql/*/bin`` (Debian's packages put them there).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.conftest import UNDER_CI, free_port


def _binaries() -> Path | None:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                      else 0)
    return versions[-1].parent if versions else None


def missing() -> str | None:
    """Why a cluster cannot be made here, or None."""
    if _binaries() is None:
        return "PostgreSQL's initdb and pg_ctl are not installed"
    if os.getuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root, and there is no postgres user to run initdb as"
    return None


class Cluster:
    def __init__(self) -> None:
        bin_dir = _binaries()
        assert bin_dir is not None
        self._bin = bin_dir
        self._as: dict[str, Any] = {}
        self.root = Path(tempfile.mkdtemp(prefix="tidings-pg-"))
        if os.getuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> None:
        done = subprocess.run([str(self._bin / args[0]), *args[1:]], cwd=self.root,
                              capture_output=True, text=True, timeout=120, check=False,
                              **self._as)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stdout}{done.stderr}{log}")

    def create(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
                  "--no-sync", "-E", "UTF8", "--locale=C")
        # Durability against a crashed server does not need fsync (the OS keeps what was
        # written), and the test runs faster on a shared disk without it.
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c shared_buffers=32MB -c max_connections=100")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options,
                  "-w", "-t", "60", "start")

    def restart(self, mode: str) -> None:
        """``pg_ctl restart -m mode``, returning once the server accepts connections again."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-m", mode, "-w",
                  "-t", "60", "restart")

    def destroy(self) -> None:
        try:
            if self.data.exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def unavailable_reason_or_fail() -> str | None:
    """None when a cluster can be made; else why not (a failure under CI, where it must)."""
    reason = missing()
    if reason is not None and UNDER_CI:
        raise AssertionError(f"the restart test needs its own PostgreSQL cluster: {reason}")
    return reason
