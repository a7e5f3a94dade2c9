"""The second wall: hostile SQL run straight on the hardened DuckDB connection, with the
SQL gate bypassed, cannot read or write files, reach the network, persist anything or
loosen the configuration.

Each statement must be refused *as a refusal* (DuckDB's permission, disabled, locked or
read-only message), and the same statement must succeed, or fail for another reason, on a
plain DuckDB: a statement that fails everywhere would prove nothing about the hardening."""

from __future__ import annotations

import http.server
import os
import re
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import pytest

from trace_platform.adapters.duckdb.hardened import DuckDBLimits, HardenedDatabase, PinnedFiles
from trace_platform.adapters.duckdb.pool import DatabasePool
from trace_platform.core.errors import FailedPrecondition, ResourceExhausted


@pytest.fixture
def secret_files(tmp_path: Path) -> dict[str, Path]:
    parquet = tmp_path / "secret.parquet"
    pq.write_table(pa.table({"secret": ["s3cr3t"]}), parquet)
    csv = tmp_path / "secret.csv"
    csv.write_text("secret\ns3cr3t\n")
    json_file = tmp_path / "secret.json"
    json_file.write_text('{"secret": "s3cr3t"}\n')
    duckdb.connect().execute(f"EXPORT DATABASE '{tmp_path / 'importable'}'")  # a database IMPORT can load
    return {"parquet": parquet, "csv": csv, "json": json_file, "dir": tmp_path}


@pytest.fixture
def http_server() -> Iterator[str]:
    hits: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"secret\ns3cr3t\n")

        def do_HEAD(self) -> None:
            self.do_GET()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/x.csv"
    server.shutdown()
    assert hits == [], "DuckDB reached the network"


def _version_dir(root: Path, name: str, value: str) -> PinnedFiles:
    """A version directory holding one Parquet object, as a pinned database sees it."""
    directory = root / "datasets" / name
    directory.mkdir(parents=True)
    path = directory / "part-0.parquet"
    pq.write_table(pa.table({"value": [value]}), path)
    (directory / "_manifest.json").write_text("{}")
    return PinnedFiles((f"{directory}/",), (str(path),), (path.stat().st_size,))


@pytest.fixture
def versions(tmp_path: Path) -> dict[str, PinnedFiles]:
    return {"mine": _version_dir(tmp_path, "v-mine", "granted"), "sibling": _version_dir(tmp_path, "v-other", "s3cr3t")}


@pytest.fixture(params=["granted", "pinned"])
def hardened(
    request: pytest.FixtureRequest, tmp_path: Path, versions: dict[str, PinnedFiles]
) -> Iterator[HardenedDatabase]:
    pinned = versions["mine"] if request.param == "pinned" else None
    db = HardenedDatabase(tmp_path / "work", DuckDBLimits("256MB", 1), pinned)
    yield db
    db.close()


def hostile_statements(files: dict[str, Path], url: str) -> list[str]:
    p, c, j, d = files["parquet"], files["csv"], files["json"], files["dir"]
    return [
        f"SELECT * FROM read_parquet('{p}')",
        f"SELECT * FROM '{p}'",
        f"SELECT * FROM read_csv('{c}')",
        f"SELECT * FROM read_csv_auto('{c}')",
        f"SELECT * FROM read_text('{c}')",
        f"SELECT * FROM read_blob('{c}')",
        f"SELECT * FROM read_json_auto('{j}')",
        f"SELECT * FROM glob('{d}/*')",
        f"SELECT * FROM parquet_metadata('{p}')",
        f"COPY (SELECT 42) TO '{d}/out.csv'",
        f"ATTACH '{d}/other.duckdb' AS other",
        f"EXPORT DATABASE '{d}/export'",
        f"IMPORT DATABASE '{d}/importable'",
        f"SELECT * FROM read_csv('{url}')",
        f"SELECT * FROM read_parquet('{url}')",
        "INSTALL httpfs",
        "LOAD httpfs",
        "FORCE INSTALL httpfs",
        "SET enable_external_access = true",
        "SET disabled_filesystems = ''",
        "SET lock_configuration = false",
        "RESET lock_configuration",
        "SET autoinstall_known_extensions = true",
        "SET allow_unsigned_extensions = true",
        f"SET temp_directory = '{d}'",
        "SET memory_limit = '100GB'",
        "SET threads = 64",
        "CREATE TABLE leak AS SELECT 1 AS x",
        "CREATE VIEW leak AS SELECT 1 AS x",
        "CREATE MACRO leak() AS 1",
        "ATTACH ':memory:' AS scratch",
        # Not here: CREATE SECRET (every secret type needs httpfs, refused above) and
        # getenv (a CLI-only function): both fail on a plain DuckDB too.
    ]


# How DuckDB says an access was refused by configuration (and nothing else says).
REFUSED = re.compile(r"Permission Error|has been disabled|are disabled by configuration|has been locked|read-only mode")


def _plain_outcome(sql: str, directory: Path) -> str | None:
    """None when ``sql`` succeeds on a plain DuckDB, else its error."""
    plain = duckdb.connect(str(directory / "plain.duckdb"), config={"autoinstall_known_extensions": False})
    try:
        plain.execute(sql).fetchall()
    except duckdb.Error as exc:
        return str(exc)
    finally:
        plain.close()
    return None


def test_hostile_sql_fails_on_the_hardened_connection(
    hardened: HardenedDatabase, secret_files: dict[str, Path], http_server: str
) -> None:
    conn = hardened.connect()
    allowed, not_refused = [], []
    statements = hostile_statements(secret_files, http_server)
    for sql in statements:
        try:
            conn.execute(sql).fetchall()
            allowed.append(sql)
        except duckdb.Error as exc:
            if not REFUSED.search(str(exc)):
                not_refused.append((sql, str(exc).splitlines()[0]))
    assert allowed == []
    assert not_refused == []  # each failed because access was refused, not for another reason
    assert not (secret_files["dir"] / "out.csv").exists()
    assert conn.execute("SELECT 41 + 1").fetchall() == [(42,)]
    # The hardening is what refuses them: a plain DuckDB runs them, or fails otherwise.
    refused_anyway = []
    for sql in statements:
        error = _plain_outcome(sql, secret_files["dir"])
        if error is not None and REFUSED.search(error):
            refused_anyway.append(sql)
    assert refused_anyway == []
    assert (secret_files["dir"] / "out.csv").exists()  # the plain one wrote it


def test_pinned_database_reads_its_versions_and_nothing_beside_them(
    tmp_path: Path, versions: dict[str, PinnedFiles]
) -> None:
    db = HardenedDatabase(tmp_path / "work", DuckDBLimits("256MB", 1), versions["mine"])
    try:
        conn = db.connect()
        assert conn.execute("SELECT value FROM dataset").fetchall() == [("granted",)]
        mine, sibling = versions["mine"].directories[0], versions["sibling"].paths[0]
        for sql in (
            f"SELECT * FROM read_parquet('{sibling}')",
            f"SELECT * FROM read_parquet('{mine}../v-other/part-0.parquet')",
            f"SELECT * FROM glob('{mine}../*')",
            f"SELECT * FROM read_text('{tmp_path}/datasets/v-other/_manifest.json')",
        ):
            with pytest.raises(duckdb.PermissionException):
                conn.execute(sql).fetchall()
    finally:
        db.close()


def test_pinned_database_refuses_a_missing_or_resized_object(tmp_path: Path, versions: dict[str, PinnedFiles]) -> None:
    pinned = versions["mine"]
    resized = PinnedFiles(pinned.directories, pinned.paths, (pinned.sizes[0] + 1,))
    with pytest.raises(FailedPrecondition) as err:
        HardenedDatabase(tmp_path / "work", DuckDBLimits(), resized)
    assert err.value.reason == "DATASET_OBJECT_INVALID"
    os.remove(pinned.paths[0])
    with pytest.raises(FailedPrecondition) as err:
        HardenedDatabase(tmp_path / "work", DuckDBLimits(), pinned)
    assert err.value.reason == "DATASET_OBJECT_MISSING"
    assert list((tmp_path / "work").iterdir()) == []  # nothing half-made is left behind


async def test_pool_keeps_pinned_databases_per_version_set(tmp_path: Path, versions: dict[str, PinnedFiles]) -> None:
    pool = DatabasePool(tmp_path / "work", DuckDBLimits(), slots=1, queue=0, wait_seconds=0.1, pinned_idle=1)
    await pool.start()
    try:
        async with pool.database(versions["mine"]) as db:
            first = db
        async with pool.database(versions["mine"]) as db:
            assert db is first  # reused: no 30 ms start per request
        async with pool.database(versions["sibling"]) as db:
            assert db.pinned == versions["sibling"]
        assert not first.dir.exists()  # closed: one idle pinned database at most
        async with pool.database(versions["sibling"]) as db:
            (db.temp_dir / "spill.tmp").write_bytes(b"x")
            spilled = db
        async with pool.database(versions["sibling"]) as db:
            assert db is not spilled and not spilled.dir.exists()
    finally:
        await pool.close()


def test_nothing_persists_between_connections(hardened: HardenedDatabase) -> None:
    first = hardened.connect()
    first.execute("CREATE TEMP TABLE t AS SELECT 1 AS x")
    first.close()
    with pytest.raises(duckdb.CatalogException):
        hardened.connect().execute("SELECT * FROM t").fetchall()


def test_registered_dataset_is_readable_and_private_to_its_connection(
    tmp_path: Path, secret_files: dict[str, Path]
) -> None:
    hardened = HardenedDatabase(tmp_path / "work", DuckDBLimits("256MB", 1))  # granted: no catalog view
    conn = hardened.connect()
    conn.register("dataset", pads.dataset([str(secret_files["parquet"])], format="parquet"))
    assert conn.execute("SELECT secret FROM dataset").fetchall() == [("s3cr3t",)]
    with pytest.raises(duckdb.CatalogException):
        hardened.connect().execute("SELECT * FROM dataset").fetchall()
    hardened.close()


def test_private_directories_are_0700_and_removed_on_close(tmp_path: Path) -> None:
    db = HardenedDatabase(tmp_path / "work", DuckDBLimits())
    for path in (db.dir, db.temp_dir):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    db.close()
    assert not db.dir.exists()


async def test_pool_replaces_a_database_that_spilled_and_caps_admission(tmp_path: Path) -> None:
    pool = DatabasePool(tmp_path / "work", DuckDBLimits(), slots=1, queue=0, wait_seconds=0.1)
    await pool.start()
    try:
        async with pool.database() as db:
            first_dir = db.dir
            (db.temp_dir / "spill.tmp").write_bytes(b"x")
            with pytest.raises(ResourceExhausted):
                async with pool.database():
                    pass
        assert not first_dir.exists()
        async with pool.database() as db:
            assert db.dir != first_dir and not db.spilled()
    finally:
        await pool.close()
    assert list((tmp_path / "work").iterdir()) == []
