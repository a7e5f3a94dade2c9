"""Lite's local credentials file, so a newcomer never handles tokens or keys.

``trace lite up`` writes ``<data_dir>/lite.json`` (mode 0600) with the address it
listens on, the admin and worker tokens, the secret user tokens are signed with and a
user token for the Lite organisation; the CLI reads it when no token is given.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

FILE_NAME = "lite.json"


@dataclass(frozen=True)
class LiteCredentials:
    addr: str
    admin_token: str
    worker_token: str
    user_secret: str = ""
    user_token: str = ""

    @staticmethod
    def fresh(addr: str) -> LiteCredentials:
        return LiteCredentials(addr, secrets.token_urlsafe(32), secrets.token_urlsafe(32), secrets.token_urlsafe(32))


def save(data_dir: Path, creds: LiteCredentials) -> Path:
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / FILE_NAME
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(asdict(creds), fh)
    tmp.replace(path)
    return path


def load(data_dir: Path) -> LiteCredentials | None:
    path = data_dir / FILE_NAME
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    known = {f.name for f in fields(LiteCredentials)}
    creds = LiteCredentials(**{k: v for k, v in raw.items() if k in known})
    if not creds.user_secret:  # written by an older version
        creds = replace(creds, user_secret=secrets.token_urlsafe(32))
    return creds
