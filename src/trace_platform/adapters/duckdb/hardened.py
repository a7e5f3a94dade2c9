"""A DuckDB database that untrusted SQL may run on: the second wall behind the SQL gate.

Even if the gate were bypassed, SQL on this database cannot read or write local files
(``LocalFileSystem`` disabled, external access off except for ``trace:///`` paths, which
the ``GrantedFileSystem`` serves from the current request's granted objects only), reach
the network (no extension is
installed, auto-installed or auto-loaded, so no httpfs), create anything persistent (the
catalog is an empty database file opened read-only; temporary objects die with the
per-request connection), or loosen any of this (``lock_configuration``). Memory and
threads are capped and spills go to a private (0700) temp directory.

Creating a DuckDB database costs ~30 ms of CPU, far above the Query Service's latency
budget, so databases are pooled (``DatabasePool``): each runs one request at a time, and a
database whose temp directory holds anything after a request (it spilled) is replaced
with a fresh one in a new directory, so no request ever sees another's spill files.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

from trace_platform.adapters.duckdb.granted_fs import PREFIX, GrantedFileSystem, GrantedObject

# Settings that must read back exactly like this before the database is used.
_REQUIRED = {
    "enable_external_access": "false",
    "lock_configuration": "true",
    "autoinstall_known_extensions": "false",
    "autoload_known_extensions": "false",
    "allow_community_extensions": "false",
    "allow_unsigned_extensions": "false",
    "allow_persistent_secrets": "false",
}


@dataclass(frozen=True)
class DuckDBLimits:
    memory_limit: str = "1GB"
    threads: int = 2


class HardeningFailed(RuntimeError):
    pass


class HardenedDatabase:
    def __init__(self, parent_dir: Path, limits: DuckDBLimits) -> None:
        parent_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.dir = Path(tempfile.mkdtemp(prefix="duckdb-", dir=parent_dir))  # mkdtemp: mode 0700
        self.temp_dir = self.dir / "tmp"
        self.temp_dir.mkdir(mode=0o700)
        catalog = self.dir / f"empty-{uuid.uuid4().hex}.duckdb"
        duckdb.connect(str(catalog)).close()
        try:
            self._db = duckdb.connect(
                str(catalog),
                read_only=True,
                config={
                    "autoinstall_known_extensions": False,
                    "autoload_known_extensions": False,
                    "allow_community_extensions": False,
                    "allow_unsigned_extensions": False,
                    "allow_persistent_secrets": False,
                    "extension_directory": str(self.dir / "ext"),
                    "secret_directory": str(self.dir / "secrets"),
                    "temp_directory": str(self.temp_dir),
                    "memory_limit": limits.memory_limit,
                    "threads": limits.threads,
                },
            )
            self.files = GrantedFileSystem()
            self._db.register_filesystem(self.files)
            # Order matters: allow-list and external access, then the filesystem, then the lock.
            # Safe because versions are immutable and their paths version-addressed.
            self._db.execute("SET parquet_metadata_cache = true")
            self._db.execute("SET allowed_directories = ?", [[PREFIX]])
            self._db.execute("SET enable_external_access = false")
            self._db.execute("SET disabled_filesystems = 'LocalFileSystem'")
            self._db.execute("SET lock_configuration = true")
            self._verify(catalog)
        except Exception:
            self.close()
            raise

    def _verify(self, probe_file: Path) -> None:
        names = list(_REQUIRED)
        marks = ", ".join("?" for _ in names)
        rows = self._db.execute(f"SELECT name, value FROM duckdb_settings() WHERE name IN ({marks})", names).fetchall()
        actual = {name: str(value) for name, value in rows}
        wrong = [name for name, want in _REQUIRED.items() if actual.get(name, "").lower() != want.lower()]
        # DuckDB adds its own temp directory to the allow-list when external access goes off.
        allowed = self._db.execute("SELECT unnest(current_setting('allowed_directories'))").fetchall()
        if {str(a).rstrip("/") for (a,) in allowed} - {PREFIX.rstrip("/"), str(self.temp_dir)}:
            wrong.append("allowed_directories")
        if wrong:
            raise HardeningFailed(f"DuckDB settings not applied: {', '.join(sorted(wrong))}")
        # duckdb_settings() reads disabled_filesystems back as '' even when it is in force
        # (DuckDB 2.0), so check the behaviour: reading a file we know exists must fail.
        try:
            self._db.execute("SELECT count(*) FROM read_text(?)", [str(probe_file)]).fetchall()
        except duckdb.PermissionException:
            return
        raise HardeningFailed("DuckDB can still read local files")

    def connect(self) -> duckdb.DuckDBPyConnection:
        """A new connection (its temporary views are private to it)."""
        return self._db.cursor()

    @contextmanager
    def session(self, objects: Sequence[GrantedObject]) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one request, able to read exactly ``objects`` while it lasts."""
        with self.files.grant(objects):
            conn = self.connect()
            try:
                yield conn
            finally:
                conn.close()

    def spilled(self) -> bool:
        return any(self.temp_dir.iterdir())

    def close(self) -> None:
        db = getattr(self, "_db", None)
        if db is not None:
            db.close()
        files = getattr(self, "files", None)
        if files is not None:
            files.close_sources()
        shutil.rmtree(self.dir, ignore_errors=True)
