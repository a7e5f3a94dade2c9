"""The root file system a UDF runs in: its own mount namespace, made by bubblewrap.

Invariant: inside the sandbox nothing of the host is visible except

- read-only, the system directories (``/usr``; ``/bin``, ``/sbin``, ``/lib*`` as the
  links or directories they are on the host), ``/etc/alternatives`` when a runtime is
  reached through it, and the installations of the configured runtimes that live outside
  ``/usr`` (a virtualenv, the directories its ``.pth`` files add, its base Python; an
  ``/opt`` Node), each at its own path;
- from the run directory (at the same paths as on the host, so argv, HOME and the
  endpoint need no translation): the verified bundle read-only, the bridge socket, and
  this run's ``/etc`` read-only (passwd, group, the loader's cache, the time zone);
- a private ``/proc`` (the pid namespace's), a minimal ``/dev``, and size-bounded
  private tmpfs mounts on ``/tmp``, ``/dev/shm`` and HOME (at the run directory's
  ``home`` path, nothing of the host's disk) that vanish with the namespace.

So no host unix socket (``/run``, ``/var/run``, host ``/tmp``), no data directory, no
home directory, no ``/root``, no ``/work`` unless a configured runtime lives there
(the default runtimes, /usr/bin/python3 and node from /usr/bin, bind nothing more).
Abstract unix sockets are scoped by the network namespace, which is new too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
SYSTEM_ROOTS = (Path("/usr"), *(Path(p) for p in SYSTEM_LINKS))
ALTERNATIVES = Path("/etc/alternatives")
# Listed one by one rather than --unshare-all: that implies --unshare-user-try, and a
# user namespace made by root maps only root, so setpriv could not switch to the run's uid.
NAMESPACES = ("--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try")
# As root, bwrap keeps every capability unless told otherwise (0.8 keeps the full set,
# ambient too, with only --cap-add given): drop them all, then add back what setpriv
# needs to switch to the run's uid, clear its groups and empty the bounding set; all
# are gone after it. Without a uid switch nothing is added back.
SETUID_CAPS = ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP")


@dataclass(frozen=True)
class RunMounts:
    """The parts of one run directory the sandbox sees."""

    bundle: Path  # read-only
    home: Path  # where the private HOME tmpfs is mounted (bounded, writable)
    etc: Path  # this run's /etc (write_etc)
    socket: Path | None = None  # the task bridge


# Directories the sandbox has before any bind below them.
PREMADE = frozenset({"/", "/tmp", "/dev", "/dev/shm", "/proc", "/etc", "/usr"})


def _parents(*paths: Path) -> list[str]:
    """Make the directories above binds traversable: bwrap would create them 0700,
    which the run's uid could not cross. They hold nothing but what is bound below."""
    args: list[str] = []
    made = set(PREMADE)
    for path in paths:
        for parent in reversed(path.parents):
            if str(parent) not in made:
                made.add(str(parent))
                args += ["--perms", "0755", "--dir", str(parent)]
    return args


def _under(path: Path, roots: Iterable[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def _safe(root: Path) -> bool:
    """Never a top-level directory or a home directory (or what holds one)."""
    home = Path.home()
    return len(root.parts) >= 3 and root != home and not home.is_relative_to(root)


def _install_root(exe: Path) -> Path:
    """``<prefix>`` for ``<prefix>/bin/<exe>`` (a venv, a Python or Node installation);
    the file alone where that prefix would be too wide."""
    root = exe.parent.parent if exe.parent.name == "bin" else exe
    return root if _safe(root) else exe


def _venv_paths(root: Path) -> list[Path]:
    """Absolute directories a virtualenv's ``.pth`` files put on sys.path (an editable
    install's source): part of that runtime as configured. Code lines are not paths."""
    if not (root / "pyvenv.cfg").is_file():
        return []
    found: list[Path] = []
    for pth in sorted(root.glob("lib/python*/site-packages/*.pth")):
        for line in pth.read_text(errors="replace").splitlines():
            path = Path(line.strip())
            if path.is_absolute() and not line.startswith(("#", "import")) and path.is_dir() and _safe(path):
                found.append(path)
    return found


def runtime_binds(executables: Iterable[str], search_path: str) -> tuple[Path, ...]:
    """Installations outside the system directories that the runtimes need, read-only.
    Both the configured path and its resolved target count (a venv's python links to
    its base installation). A runtime not found binds nothing: its bundles fail to start."""
    binds: list[Path] = []
    for name in executables:
        found = shutil.which(name, path=search_path)
        if not found:
            continue
        for exe in (Path(os.path.abspath(found)), Path(os.path.realpath(found))):
            if _under(exe, SYSTEM_ROOTS):
                continue
            root = _install_root(exe)
            for path in (root, *_venv_paths(root)):
                if not _under(path, binds):
                    binds = [b for b in binds if not b.is_relative_to(path)] + [path]
    return tuple(binds)


def needs_alternatives(executables: Iterable[str], search_path: str) -> bool:
    """Whether a runtime is reached through /etc/alternatives (Debian's symlink farm)."""
    for name in executables:
        hop = shutil.which(name, path=search_path)
        for _ in range(40):  # the kernel's own symlink limit
            if hop is None or not os.path.islink(hop):
                break
            hop = os.path.join(os.path.dirname(hop), os.readlink(hop))
            if Path(os.path.abspath(hop)).is_relative_to(ALTERNATIVES):
                return True
    return False


def root_args(binds: Iterable[Path], alternatives: bool = False) -> tuple[str, ...]:
    """The read-only part of the root, the same for every run (computed once). It
    follows this run's /etc (``bwrap_argv``), so /etc/alternatives can go over it."""
    args = ["--ro-bind", "/usr", "/usr"]
    for link in SYSTEM_LINKS:
        path = Path(link)
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), link]
        elif path.is_dir():
            args += ["--ro-bind", link, link]
    if alternatives:
        args += ["--ro-bind", str(ALTERNATIVES), str(ALTERNATIVES)]
    for bind in binds:
        args += [*_parents(bind), "--ro-bind", str(bind), str(bind)]
    return tuple(args)


def write_etc(etc: Path, uid: int, home: Path) -> None:
    """This run's /etc, bound read-only as a whole (one mount, not one per file): a
    passwd and group naming only root, nobody and the run's user, a copy of the
    loader's cache, the host's time zone link, and a mount point for alternatives."""
    etc.mkdir(mode=0o755, exist_ok=True)
    (etc / "alternatives").mkdir(mode=0o755)
    (etc / "passwd").write_text(
        "root:x:0:0:root:/nonexistent:/usr/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        f"udf:x:{uid}:{uid}:udf:{home}:/usr/sbin/nologin\n"
    )
    (etc / "group").write_text(f"root:x:0:\nnogroup:x:65534:\nudf:x:{uid}:\n")
    with contextlib.suppress(FileNotFoundError):
        shutil.copyfile("/etc/ld.so.cache", etc / "ld.so.cache")
    with contextlib.suppress(OSError):  # a link into /usr/share/zoneinfo, or nothing
        (etc / "localtime").symlink_to(os.readlink("/etc/localtime"))
    for path in (etc, *etc.iterdir()):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)


def bwrap_argv(
    bwrap: str, root: tuple[str, ...], mounts: RunMounts, tmpfs_bytes: int, *, userns: bool, switch_uid: bool
) -> list[str]:
    """The bubblewrap prefix for one run, ending in ``--``; the rest of the chain follows.
    bwrap itself sets no_new_privs (checked by the probe's run)."""
    argv = [bwrap, *NAMESPACES, *(("--unshare-user",) if userns else ()), "--die-with-parent", "--cap-drop", "ALL"]
    for cap in SETUID_CAPS if switch_uid else ():
        argv += ["--cap-add", cap]
    argv += ["--ro-bind", str(mounts.etc), "/etc", "--proc", "/proc", "--dev", "/dev"]
    for tmp in ("/tmp", "/dev/shm"):
        argv += ["--perms", "1777", "--size", str(tmpfs_bytes), "--tmpfs", tmp]
    # Binds after the tmpfs mounts, which would hide them: a runtime or the run
    # directory may lie under the host's /tmp. The root follows this run's /etc.
    argv += root
    socket = () if mounts.socket is None else (mounts.socket,)
    argv += _parents(mounts.home, mounts.bundle, *socket)
    # HOME is a private, size-bounded tmpfs at the run directory's home path, like /tmp: a
    # bind of the host directory let a UDF fill the host's disk (the file size rlimit caps
    # one file, not their number). 1777 as /tmp: only this run's uid lives in the namespace.
    argv += ["--perms", "1777", "--size", str(tmpfs_bytes), "--tmpfs", str(mounts.home)]
    argv += ["--ro-bind", str(mounts.bundle), str(mounts.bundle)]
    if mounts.socket is not None:
        argv += ["--bind", str(mounts.socket), str(mounts.socket)]
    # bwrap always exports PWD after --chdir: the next link (sandbox.inner_argv) unsets it.
    return [*argv, "--chdir", str(mounts.bundle), "--"]
