"""A DuckDB database that untrusted SQL may run on: the second wall behind the SQL gate.

Even if the gate were bypassed, SQL on this database cannot read or write files other than
the ones it serves, reach the network (no extension is installed, auto-installed or
auto-loaded, so no httpfs), create anything persistent (the catalog is a database file
opened read-only; temporary objects die with the per-request connection), or loosen any of
this (``lock_configuration``). Memory and threads are capped and spills go to a private
(0700) temp directory of bounded size (``max_temp_directory_size``). DuckDB's memory limit
does not bound every allocation (string and list builders go around it), so the Query
Service runs these databases in query processes under an OS address-space cap
(``servers/query/worker.py``). A database comes in one of two kinds:

- **Granted** (any store): ``LocalFileSystem`` is disabled and external access is off
  except for ``trace:///`` paths, which the ``GrantedFileSystem`` serves from the objects
  granted to the request currently holding the database. Each request exposes its objects
  as a temporary view.
- **Pinned** (objects on this machine's filesystem): the database can read exactly one
  set of dataset versions, fixed when it is created. DuckDB's own allow-list
  (``allowed_directories``) holds only those versions' directories, and the catalog holds
  one view per relation (``dataset``, or the names the caller gave) over their Parquet
  objects, so DuckDB reads the files natively
  (no Python call per read) and a request needs no setup. Versions are immutable and
  their directories version-addressed, so what a pinned database can read never changes.

Creating a DuckDB database costs ~30 ms of CPU, far above the Query Service's latency
budget, so databases are pooled (``DatabasePool``): each runs one request at a time, and a
database whose temp directory holds anything after a request (it spilled) is closed, so no
request ever sees another's spill files.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import duckdb

from trace_platform.adapters.duckdb.granted_fs import (
    CORRUPT,
    MISSING,
    PREFIX,
    UNAVAILABLE,
    GrantedFileSystem,
    GrantedObject,
)
from trace_platform.core.errors import FailedPrecondition, TraceError, Unavailable

RELATION = "dataset"
# Relation views: (name, number of objects), consecutive over a request's objects in order.
# Empty means one view, ``dataset``, over all of them. Names are checked before they get
# here (``core.relations``: identifiers, never keywords) and are quoted anyway.
Views = tuple[tuple[str, int], ...]

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
    temp_limit: str = "4GB"  # spill bound (DuckDB's default is 90% of the free disk)


class HardeningFailed(RuntimeError):
    pass


@dataclass(frozen=True)
class PinnedFiles:
    """The local Parquet objects of a set of dataset versions, and their directories."""

    directories: tuple[str, ...]  # each ends with "/"
    paths: tuple[str, ...]
    sizes: tuple[int, ...]
    views: Views = ()  # which paths each relation's view reads (part of the key: a catalog per set)

    def failure(self) -> str | None:
        """MISSING or CORRUPT when an object is gone or differs in size from its manifest."""
        for path, size in zip(self.paths, self.sizes, strict=True):
            try:
                if os.stat(path).st_size != size:
                    return CORRUPT
            except FileNotFoundError:
                return MISSING
        return None


_STORAGE_ERRORS: dict[str, TraceError] = {
    MISSING: FailedPrecondition("DATASET_OBJECT_MISSING", "an object named by the manifest is missing"),
    CORRUPT: FailedPrecondition("DATASET_OBJECT_INVALID", "an object differs from its manifest entry"),
    UNAVAILABLE: Unavailable("OBJECT_STORE_UNAVAILABLE", "reading the dataset failed"),
}


def storage_error(failure: str) -> TraceError:
    """The caller's error for a storage failure (MISSING, CORRUPT or UNAVAILABLE)."""
    template = _STORAGE_ERRORS.get(failure, _STORAGE_ERRORS[UNAVAILABLE])
    return type(template)(template.reason, template.message)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _view_sql(name: str, paths: Sequence[str], temp: bool) -> str:
    """The relation ``name`` over DuckDB's own Parquet reader (trusted code writes the paths)."""
    listed = ", ".join(_quote(p) for p in paths)
    kind = "TEMP VIEW" if temp else "VIEW"
    quoted = '"' + name.replace('"', '""') + '"'
    return f"CREATE {kind} {quoted} AS SELECT * FROM read_parquet([{listed}], hive_partitioning = false)"


def view_statements(paths: Sequence[str], views: Views, temp: bool) -> list[str]:
    """One CREATE VIEW per relation, each over its own run of ``paths``."""
    if not views:
        return [_view_sql(RELATION, paths, temp)]
    if sum(count for _, count in views) != len(paths) or any(count < 1 for _, count in views):
        raise ValueError("relation views do not cover the objects")
    statements, start = [], 0
    for name, count in views:
        statements.append(_view_sql(name, paths[start : start + count], temp))
        start += count
    return statements


class HardenedDatabase:
    def __init__(self, parent_dir: Path, limits: DuckDBLimits, pinned: PinnedFiles | None = None) -> None:
        self.pinned = pinned
        parent_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.dir = Path(tempfile.mkdtemp(prefix="duckdb-", dir=parent_dir))  # mkdtemp: mode 0700
        self.temp_dir = self.dir / "tmp"
        self.temp_dir.mkdir(mode=0o700)
        probe = self.dir / "probe.txt"  # outside every allowed directory
        probe.write_text("probe\n")
        catalog = self.dir / f"catalog-{uuid.uuid4().hex}.duckdb"
        self.files: GrantedFileSystem | None = None
        try:
            self._create_catalog(catalog)
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
                    "max_temp_directory_size": limits.temp_limit,
                    "threads": limits.threads,
                },
            )
            if pinned is None:
                self.files = GrantedFileSystem()
                self._db.register_filesystem(self.files)
            # Order matters: allow-list and external access, then the filesystems, then the lock.
            # Safe because versions are immutable and their paths version-addressed.
            self._db.execute("SET parquet_metadata_cache = true")
            self._db.execute("SET allowed_directories = ?", [self._allowed()])
            self._db.execute("SET enable_external_access = false")
            if pinned is None:
                self._db.execute("SET disabled_filesystems = 'LocalFileSystem'")
            self._db.execute("SET lock_configuration = true")
            self._verify(probe)
        except Exception:
            self.close()
            raise

    def _allowed(self) -> list[str]:
        return [PREFIX] if self.pinned is None else list(self.pinned.directories)

    def _create_catalog(self, catalog: Path) -> None:
        """An empty catalog, or for a pinned database one holding the view ``dataset``
        (written by trusted code before the database is opened read-only and locked)."""
        if self.pinned is not None:
            failure = self.pinned.failure()
            if failure is not None:
                raise storage_error(failure)
        setup = duckdb.connect(
            str(catalog), config={"autoinstall_known_extensions": False, "autoload_known_extensions": False}
        )
        try:
            if self.pinned is not None:
                for statement in view_statements(self.pinned.paths, self.pinned.views, temp=False):
                    setup.execute(statement)
        except duckdb.IOException:
            raise storage_error(UNAVAILABLE) from None
        finally:
            setup.close()

    def _verify(self, probe_file: Path) -> None:
        names = list(_REQUIRED)
        marks = ", ".join("?" for _ in names)
        rows = self._db.execute(f"SELECT name, value FROM duckdb_settings() WHERE name IN ({marks})", names).fetchall()
        actual = {name: str(value) for name, value in rows}
        wrong = [name for name, want in _REQUIRED.items() if actual.get(name, "").lower() != want.lower()]
        # DuckDB adds its own temp directory to the allow-list when external access goes off.
        allowed = self._db.execute("SELECT unnest(current_setting('allowed_directories'))").fetchall()
        if {str(a).rstrip("/") for (a,) in allowed} - {d.rstrip("/") for d in self._allowed()} - {str(self.temp_dir)}:
            wrong.append("allowed_directories")
        if wrong:
            raise HardeningFailed(f"DuckDB settings not applied: {', '.join(sorted(wrong))}")
        # duckdb_settings() reads disabled_filesystems back as '' even when it is in force
        # (DuckDB 2.0), so check the behaviour: reading a file we know exists, outside every
        # allowed directory, must fail.
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
        """A connection for one request, able to read exactly ``objects`` while it lasts
        (a pinned database: its own objects, which are the same)."""
        with self.files.grant(objects) if self.files is not None else nullcontext():
            conn = self.connect()
            try:
                yield conn
            finally:
                conn.close()

    def expose(self, conn: duckdb.DuckDBPyConnection, objects: Sequence[GrantedObject], views: Views = ()) -> None:
        """Make each relation name its objects on ``conn`` (a pinned database's catalog
        already holds them): temporary views, private to the connection."""
        if self.files is not None:
            for statement in view_statements([o.virtual_path for o in objects], views, temp=True):
                conn.execute(statement)

    def storage_failure(self) -> str | None:
        """Why reading the objects failed, if a storage fault explains a query error."""
        if self.files is not None:
            return self.files.failure
        assert self.pinned is not None
        return self.pinned.failure()

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
