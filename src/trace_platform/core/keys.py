"""Signing keys for task capability tokens, their JWKS and rotation.

A key ring has one *current* key (signs new tokens), an optional *next* key
(published ahead of rotation, so verifiers already trust it), and *previous* keys
kept until their tokens can no longer be valid (the overlap window). Keys are
ES256 (P-256); HS256 exists only as an explicit development setting.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

ES256 = "ES256"
HS256 = "HS256"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: ec.EllipticCurvePrivateKey

    @staticmethod
    def generate() -> SigningKey:
        return SigningKey(kid=f"k-{secrets.token_hex(8)}", private_key=ec.generate_private_key(ec.SECP256R1()))

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = ECAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        jwk.update({"kid": self.kid, "alg": ES256, "use": "sig"})
        return jwk

    def pem(self) -> bytes:
        return self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


@dataclass
class KeyRing:
    current: SigningKey
    next: SigningKey | None = None
    # (key, unix time after which it is dropped from the JWKS)
    previous: list[tuple[SigningKey, float]] = field(default_factory=list)

    def jwks(self, now: float | None = None) -> dict[str, Any]:
        now = time.time() if now is None else now
        keys = [self.current.public_jwk()]
        if self.next is not None:
            keys.append(self.next.public_jwk())
        keys.extend(k.public_jwk() for k, retire in self.previous if retire > now)
        return {"keys": keys}

    def rotate(self, overlap_seconds: float, now: float | None = None) -> None:
        """Promote next to current; keep the old current verifiable for the overlap."""
        now = time.time() if now is None else now
        self.previous = [(k, r) for k, r in self.previous if r > now]
        self.previous.append((self.current, now + overlap_seconds))
        self.current = self.next or SigningKey.generate()
        self.next = SigningKey.generate()


class KeyStore:
    """Keeps a key ring in a private directory (mode 0700, keys 0600)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _meta_path(self) -> Path:
        return self.directory / "keyring.json"

    def load_or_create(self) -> KeyRing:
        if self._meta_path().exists():
            return self.load()
        ring = KeyRing(current=SigningKey.generate(), next=SigningKey.generate())
        self.save(ring)
        return ring

    def load(self) -> KeyRing:
        meta = json.loads(self._meta_path().read_text())

        def read(kid: str) -> SigningKey:
            pem = (self.directory / f"{kid}.pem").read_bytes()
            key = serialization.load_pem_private_key(pem, password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError("task signing keys must be EC P-256")
            return SigningKey(kid=kid, private_key=key)

        return KeyRing(
            current=read(meta["current"]),
            next=read(meta["next"]) if meta.get("next") else None,
            previous=[(read(p["kid"]), float(p["retire_after"])) for p in meta.get("previous", [])],
        )

    def save(self, ring: KeyRing) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        os.chmod(self.directory, 0o700)
        keys = [ring.current, *([ring.next] if ring.next else []), *(k for k, _ in ring.previous)]
        for key in keys:
            path = self.directory / f"{key.kid}.pem"
            if not path.exists():
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(key.pem())
        meta = {
            "current": ring.current.kid,
            "next": ring.next.kid if ring.next else None,
            "previous": [{"kid": k.kid, "retire_after": r} for k, r in ring.previous],
        }
        tmp = self._meta_path().with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # the ring's alone, like the keys
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(meta, indent=2))
        tmp.replace(self._meta_path())
