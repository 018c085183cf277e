"""A throwaway PostgreSQL server for the test session (tests/pg/ensure-postgresql.sh installs Debian's).

`initdb` in a temporary folder, the server listening only on a unix socket in that folder (no TCP port, so
nothing collides with other test runs or a system cluster), stopped and deleted at the end. `initdb` refuses
to run as root: as root, the server runs as the `postgres` account the Debian package creates.
"""

from __future__ import annotations

import itertools
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

PORT = 5432  # only names the socket file in the server's own folder
SUPERUSER = "postgres"
DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"
# Durability is not under test here, start-up and CREATE DATABASE speed are.
SERVER_OPTIONS = "-c listen_addresses='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off"


class PostgresUnavailable(RuntimeError):
    """The test server could not be started; the message says why (with the end of its log)."""


def find_bindir() -> Path:
    """The folder of `initdb` and `pg_ctl`: Debian's newest version, else the ones on PATH."""
    debian = sorted(
        Path("/").glob(DEBIAN_BINDIRS.lstrip("/")),
        key=lambda path: [int(part) for part in re.findall(r"\d+", path.parent.name)],
    )
    for bindir in reversed(debian):
        if (bindir / "initdb").is_file():
            return bindir
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise PostgresUnavailable("initdb not found: run tests/pg/ensure-postgresql.sh (make test does)")


@dataclass
class PostgresServer:
    folder: Path  # data directory, socket and log
    bindir: Path
    run_as: Sequence[str]  # prefix that runs a command as the server's account (empty: as ourselves)
    _names: itertools.count = field(default_factory=lambda: itertools.count(1))

    @classmethod
    def start(cls) -> PostgresServer:
        bindir = find_bindir()
        folder = Path(tempfile.mkdtemp(prefix="cds-pg-"))
        run_as: list[str] = []
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam(SUPERUSER)
            except KeyError:
                raise PostgresUnavailable("running as root and there is no postgres account") from None
            os.chown(folder, account.pw_uid, account.pw_gid)
            run_as = ["runuser", "-u", SUPERUSER, "--"]
        server = cls(folder, bindir, run_as)
        try:
            server._run(
                "initdb",
                "-D",
                str(server.data),
                "-U",
                SUPERUSER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            )
            server.resume()
        except PostgresUnavailable:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return server

    def halt(self) -> None:
        """Stop the server as an outage does (its clients' connections are closed), keeping its databases."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def resume(self) -> None:
        """Start the server (again): it answers when this returns."""
        options = f"-k {self.folder} -p {PORT} {SERVER_OPTIONS}"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options, "start"
        )

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    def url(self, database: str, driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://{SUPERUSER}@/{database}?host={self.folder}&port={PORT}"

    def create_database(self) -> str:
        """Create a new, empty database; return its name."""
        name = f"test_{next(self._names)}"
        self._execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, closing the connections still open on it (a test's own engines, say)."""
        self._execute(f'DROP DATABASE "{name}" WITH (FORCE)')

    def _execute(self, statement: str) -> None:
        with psycopg.connect(
            host=str(self.folder), port=PORT, user=SUPERUSER, dbname="postgres", autocommit=True
        ) as connection:
            connection.execute(statement)

    def stop(self) -> None:
        try:
            self.halt()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        command = [*self.run_as, str(self.bindir / program), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.is_file() else ""
            raise PostgresUnavailable(
                f"{program} failed ({result.returncode}): {result.stderr.strip()[-2000:]}\n{log}"
            )
