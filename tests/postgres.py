"""A throwaway PostgreSQL server on loopback, for the scale-out tests and benchmark.

``initdb`` into a temporary folder and ``pg_ctl start`` listening on 127.0.0.1 only, with trust
authentication (nothing but this machine can reach it). PostgreSQL refuses to run as root, so
as root the server runs as the ``postgres`` user that Debian's package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


class ServerUnavailable(Exception):
    """No PostgreSQL server could be started here (the reason says why)."""


@dataclass
class ThrowawayServer:
    folder: Path
    bindir: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://edgetune@127.0.0.1:{self.port}/postgres"

    @staticmethod
    def start() -> ThrowawayServer:
        bindir = _bindir()
        folder = Path(tempfile.mkdtemp(prefix="edgetune-pg-"))
        if os.getuid() == 0:
            try:
                shutil.chown(folder, "postgres", "postgres")
            except (LookupError, OSError) as error:
                raise ServerUnavailable(f"running as root and no 'postgres' user ({error})")
        server = ThrowawayServer(folder, bindir, _free_port())
        server._run("initdb", "-D", str(folder / "data"), "-U", "edgetune", "--auth=trust",
                    "-E", "UTF8", "--no-sync")
        server._run("pg_ctl", "-D", str(folder / "data"), "-l", str(folder / "log"), "-w",
                    "-o", f"-c listen_addresses=127.0.0.1 -p {server.port} -k {folder} "
                          "-c fsync=off -c max_connections=50",
                    "start")
        return server

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        if os.getuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                                check=False, cwd=self.folder)
        if result.returncode != 0:
            log = self.folder / "log"
            detail = (result.stderr or result.stdout).strip()
            if log.exists():
                detail += "\n" + log.read_text()[-2000:]
            raise ServerUnavailable(f"{program} failed: {detail}")


def _bindir() -> Path:
    """Where initdb and pg_ctl live: Debian keeps them off PATH, under /usr/lib/postgresql."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if not candidates and shutil.which("initdb"):
        candidates = [shutil.which("initdb")]  # type: ignore[list-item]
    if not candidates:
        raise ServerUnavailable("initdb not found (install the Debian package postgresql; "
                                "scripts/test.sh does)")
    return Path(candidates[0]).parent


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
