"""A throw-away PostgreSQL server for the test session (the ``postgres_url`` fixture in conftest).

The server runs on 127.0.0.1 at a free port with trust authentication, its data and unix socket in a
temporary folder, and is stopped (and the folder removed) at the end of the session. It needs
PostgreSQL's server binaries (Debian: ``apt-get install postgresql``, found in
/usr/lib/postgresql/<version>/bin or on PATH) and the ``psycopg`` driver (``make setup`` installs the
``postgres`` extra); without either the tests that use it are skipped with the reason.
Set ``MAMMOCAD_TEST_POSTGRES_URL`` to use an existing server instead (its database must be writable;
tests use study names of their own, so a shared database is fine).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

POSTGRES_URL_ENV = "MAMMOCAD_TEST_POSTGRES_URL"
#: The database the session server creates (the URL the fixture returns points at it).
DATABASE = "mammocad_test"
#: PostgreSQL refuses to run as root; the server then runs as this unprivileged user.
SERVER_USER = "nobody"


def server_binaries() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: PATH first, else Debian's newest version."""
    candidates: list[Path] = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: _version_key(Path(p).parent.name))
    candidates += [Path(p) for p in reversed(debian)]
    for folder in candidates:
        if all((folder / tool).is_file() for tool in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def with_psycopg_dialect(url: str) -> str:
    """``postgresql://...`` (SQLAlchemy's psycopg2 default) as ``postgresql+psycopg://...`` (psycopg 3)."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


class PostgresServer:
    """initdb + pg_ctl start in ``root`` (a fresh folder); ``url`` once started; ``stop()`` ends it."""

    def __init__(self, binaries: Path, root: Path) -> None:
        self.binaries = binaries
        self.root = root
        self.data = root / "data"
        self.log = root / "server.log"
        self.port = 0
        self.run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            account = pwd.getpwnam(SERVER_USER)
            self.run_as = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
            os.chown(root, account.pw_uid, account.pw_gid)

    def _run(self, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        # cwd: the server user may not enter the caller's folder (root's home, pytest's 0700 tmp).
        return subprocess.run(
            [str(self.binaries / tool), *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "LC_ALL": "C", "PGTZ": "UTC"},
            check=False,
            **self.run_as,
        )

    def start(self) -> str:
        """Create the cluster, start it, create the test database; returns its SQLAlchemy URL."""
        done = self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync")
        if done.returncode:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        # Speed over durability: the cluster is thrown away at the end of the session.
        options = f"-c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off -c synchronous_commit=off"
        options += " -c full_page_writes=off -c max_connections=200"
        for _ in range(3):  # another process may take the free port between probing and binding
            self.port = _free_port()
            done = self._run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-l",
                str(self.log),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {self.port} {options}",
                "start",
            )
            if done.returncode == 0:
                break
        else:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"pg_ctl start failed:\n{done.stdout}\n{done.stderr}\n{log[-2000:]}")
        created = self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", DATABASE)
        if created.returncode:
            self.stop()
            raise RuntimeError(f"createdb failed:\n{created.stdout}\n{created.stderr}")
        return self.url

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{DATABASE}"

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


def new_database(url: str, prefix: str = "t") -> str:
    """A fresh, empty database on the server of ``url`` (for a test that needs the tables to itself)."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    parsed = make_url(url)
    with psycopg.connect(
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database,
        autocommit=True,
    ) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return parsed.set(database=name).render_as_string(hide_password=False)


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """The session's PostgreSQL URL (``postgresql+psycopg://...``); skips the test when unavailable."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed (make setup installs it with every extra)")
    existing = os.environ.get(POSTGRES_URL_ENV)
    if existing:
        yield with_psycopg_dialect(existing)
        return
    binaries = server_binaries()
    if binaries is None:
        pytest.skip(
            f"PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH or in "
            f"/usr/lib/postgresql/*/bin (apt-get install postgresql), and {POSTGRES_URL_ENV} is not set"
        )
    root = Path(tempfile.mkdtemp(prefix="mammocad-pg-"))
    try:
        try:
            server = PostgresServer(binaries, root)
            url = server.start()
        except (RuntimeError, OSError, KeyError, subprocess.SubprocessError) as exc:  # KeyError: no such user
            pytest.skip(f"could not start a PostgreSQL server from {binaries}: {exc}")
        try:
            yield url
        finally:
            server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
