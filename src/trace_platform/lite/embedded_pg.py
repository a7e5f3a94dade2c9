"""An embedded PostgreSQL for Lite when no ``TRACE_DATABASE_URL`` is given.

Uses the ``pgserver`` package (PostgreSQL 16 binaries from PyPI, Unix socket only).
PostgreSQL refuses to run as root; when run as root, pgserver runs the server as a
dedicated ``pgserver`` system user it creates, so this works for root too.

Invariant: starting Lite changes the mode of no directory it did not create. As root,
pgserver's own way to let its user reach the data directory is to add ``o+rx`` to every
parent (the home directory included). We do not let it: its prefix helper is replaced,
for the start only, by one that checks and changes nothing, and the cluster lives
where the ``pgserver`` user can reach it without loosening anything: under
``/var/lib/trace-lite`` (root-owned, 0711: traverse only, no listing), in a directory
named by a hash of the Lite data directory (so each Lite data directory keeps its own
cluster), owned by ``pgserver`` and 0700 (initdb). ``/var/lib`` and ``/var`` are
traversable on any ordinary system; a POSIX ACL on the home directory was the other
choice, but it still edits the home directory and needs ACL support on its filesystem.
Not as root, the cluster stays in ``<data dir>/pg`` (0700), as before.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ROOT_CLUSTERS = Path("/var/lib/trace-lite")
SYSTEM_USER = "pgserver"


def cluster_dir(data_dir: Path) -> Path:
    """Where the cluster of Lite data directory ``data_dir`` lives for this process."""
    if os.geteuid() != 0:
        return data_dir / "pg"
    key = hashlib.sha256(str(data_dir.resolve()).encode()).hexdigest()[:16]
    return ROOT_CLUSTERS / key


def _ensure_root_base() -> None:
    """``/var/lib/trace-lite``: created 0711 root; refused if anyone else could write it
    (a directory prepared by another user could redirect the cluster)."""
    ROOT_CLUSTERS.parent.mkdir(parents=True, exist_ok=True)
    with suppress(FileExistsError):
        os.mkdir(ROOT_CLUSTERS, 0o711)
    st = os.lstat(ROOT_CLUSTERS)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise RuntimeError(f"{ROOT_CLUSTERS} must be a directory owned by root and writable by root alone")
    os.chmod(ROOT_CLUSTERS, 0o711)


def _check_traversable(path: Path) -> None:
    """Stands in for pgserver's ``ensure_prefix_permissions``: the same question (can
    the ``pgserver`` user reach ``path``?), answered without changing any mode."""
    for parent in path.resolve().parents:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            raise RuntimeError(
                f"the {SYSTEM_USER} user cannot reach {path}: {parent} is not traversable by others "
                "(Lite does not loosen it; install the platform somewhere that is)"
            )


@contextmanager
def _no_prefix_chmod() -> Iterator[None]:
    import pgserver.postgres_server as server_module

    original = server_module.ensure_prefix_permissions  # type: ignore[attr-defined]
    server_module.ensure_prefix_permissions = _check_traversable  # type: ignore[attr-defined]
    try:
        yield
    finally:
        server_module.ensure_prefix_permissions = original  # type: ignore[attr-defined]


def _adopt_old_cluster(old: Path, new: Path) -> None:
    """Lite as root kept its cluster in ``<data dir>/pg`` before: move a stopped one."""
    if new.exists() or not (old / "PG_VERSION").exists():
        return
    if (old / "postmaster.pid").exists():
        raise RuntimeError(f"an embedded PostgreSQL may still be running in {old}; stop it first")
    shutil.move(str(old), str(new))
    log.info("embedded postgres cluster moved", extra={"from": str(old), "to": str(new)})


class EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        """``data_dir`` is the Lite data directory (the cluster goes to ``cluster_dir``)."""
        self.data_dir = data_dir
        self.cluster = cluster_dir(data_dir)
        self._server: Any = None

    def start(self) -> str:
        pgserver = _import_pgserver()
        if os.geteuid() == 0:
            _ensure_root_base()
            _adopt_old_cluster(self.data_dir / "pg", self.cluster)
        else:
            self.cluster.mkdir(mode=0o700, parents=True, exist_ok=True)
        # A socket path must stay under ~100 bytes; pgserver puts it in the cluster dir.
        if len(str(self.cluster)) > 80:
            raise RuntimeError(f"data directory path too long for a PostgreSQL socket: {self.cluster}")
        with _no_prefix_chmod():
            self._server = pgserver.get_server(self.cluster, cleanup_mode="stop")  # type: ignore[attr-defined]
        uri: str = self._server.get_uri()
        log.info("embedded postgres started", extra={"data_dir": str(self.cluster)})
        return uri

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def _import_pgserver() -> Any:
    """Import ``pgserver`` without the XDG_RUNTIME_DIR warning it causes on a plain start.

    ``pgserver`` asks platformdirs for a user runtime directory when it is imported (its
    cross-process lock lives there). Without a usable ``XDG_RUNTIME_DIR`` (root, containers,
    ssh without a login session) platformdirs warns on every start and falls back to a
    shared temp directory. We give it one of ours for the import only: ``<tmp>/trace-
    pgserver-<uid>``, 0700 and owned by us (else a fresh private one), so no child process
    inherits the variable and no mode of a directory we did not create is changed.
    """
    if "pgserver" in sys.modules or _private_dir(os.environ.get("XDG_RUNTIME_DIR", "")):
        import pgserver

        return pgserver
    runtime = Path(tempfile.gettempdir()) / f"trace-pgserver-{os.getuid()}"
    with suppress(FileExistsError):
        os.mkdir(runtime, 0o700)
    if not _private_dir(str(runtime)):
        runtime = Path(tempfile.mkdtemp(prefix="trace-pgserver-"))
    saved = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    try:
        import pgserver
    finally:
        if saved is None:
            del os.environ["XDG_RUNTIME_DIR"]
        else:
            os.environ["XDG_RUNTIME_DIR"] = saved
    return pgserver


def _private_dir(path: str) -> bool:
    """What platformdirs accepts as a runtime dir: a real directory, ours, mode 0700."""
    if not path:
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700
