"""`trace bundle`: create signing keys, build, verify and upload signed UDF bundles."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from trace_platform.cli.common import CliError, addr_option, data_dir_option, run, user_token
from trace_platform.core.errors import TraceError

# cryptography and the bundle modules are imported by the commands that use them:
# listing `trace --help` must not pay for them.
if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


class RuntimeName(click.ParamType[str]):
    """One of core.bundle_manifest.RUNTIMES, checked when given (that module is not cheap)."""

    name = "runtime"

    def convert(self, value: str, param: click.Parameter | None, ctx: click.Context | None) -> str:
        from trace_platform.core.bundle_manifest import RUNTIMES

        if value not in RUNTIMES:
            self.fail(f"{value!r} is not one of {', '.join(RUNTIMES)}", param, ctx)
        return value


@click.group("bundle")
def bundle_group() -> None:
    """Signed UDF bundles (zip + bundle_manifest.json, Ed25519)."""


@bundle_group.command("keygen")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), required=True)
@click.option("--name", default="bundle-signing", show_default=True, help="File stem of NAME.key / NAME.pub.")
def keygen(out_dir: Path, name: str) -> None:
    """Create an Ed25519 key pair: NAME.key (private, mode 0600) and NAME.pub."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from trace_platform.core.bundle_manifest import key_id

    out_dir.mkdir(parents=True, exist_ok=True)
    private = out_dir / f"{name}.key"
    public = out_dir / f"{name}.pub"
    if private.exists() or public.exists():
        raise CliError(f"{private} or {public} already exists")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    # O_EXCL with mode 0600 from the start: the key is never readable by others, not even briefly.
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    click.echo(f"key id {key_id(key.public_key())}: private {private}, public {public}")


@bundle_group.command("build")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--key", "key_path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True)
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option(
    "--runtime",
    type=RuntimeName(),
    default=None,
    help="python, node, rust or custom (default: rust if ./bootstrap exists).",
)
@click.option("--entrypoint", default="", help="python: module.function; node: file.handler; rust: bootstrap.")
def build(source: Path, key_path: Path, out: Path, runtime: str | None, entrypoint: str) -> None:
    """Build and sign a bundle from SOURCE (every regular file; symlinks refused)."""
    from trace_platform.core.bundle_manifest import key_id, load_private_key
    from trace_platform.core.bundles import build_bundle

    if runtime is None:
        if not (source / "bootstrap").is_file():
            raise CliError("--runtime is required unless SOURCE has a bootstrap executable")
        runtime = "rust"
    try:
        key = load_private_key(key_path.read_bytes())
    except (ValueError, TypeError) as exc:
        raise CliError(f"{key_path}: {exc}") from None
    try:
        manifest = build_bundle(
            source, runtime, entrypoint or ("bootstrap" if runtime in ("rust", "custom") else ""), key, out
        )
    except TraceError as exc:
        raise CliError(f"{exc.reason}: {exc.message}") from None
    click.echo(
        f"{out}: {len(manifest.files)} file(s), runtime {manifest.runtime}, signed by {key_id(key.public_key())}"
    )


@bundle_group.command("verify")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--trusted", "trusted_paths", multiple=True, type=click.Path(exists=True, path_type=Path), required=True)
def verify(archive: Path, trusted_paths: tuple[Path, ...]) -> None:
    """Verify a bundle against trusted public keys (files or directories of *.pub)."""
    import tempfile

    from trace_platform.core.bundle_manifest import TrustedKeys, load_public_key
    from trace_platform.core.bundles import extract_bundle, remove_tree

    keys: list[Ed25519PublicKey] = []
    for path in trusted_paths:
        keys.extend(TrustedKeys.from_dir(path).keys.values() if path.is_dir() else [load_public_key(path.read_bytes())])
    with tempfile.TemporaryDirectory() as tmp:
        try:
            extracted = extract_bundle(archive, TrustedKeys.of(*keys), parent=Path(tmp))
        except TraceError as exc:
            raise CliError(f"{exc.reason}: {exc.message}") from None
        remove_tree(extracted.root)
    m = extracted.manifest
    click.echo(f"ok: runtime {m.runtime}, entrypoint {m.entrypoint or 'bootstrap'}, {len(m.files)} file(s)")


@bundle_group.command("upload")
@click.argument("archive", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--name", default=None, help="A name for the bundle (default: the file name).")
@click.option("--runtime", type=RuntimeName(), default=None, help="Refuse the upload unless the manifest says this.")
@click.option("--json", "as_json", is_flag=True, help="Print the bundle as JSON.")
@addr_option
@data_dir_option
def upload(archive: Path, name: str | None, runtime: str | None, as_json: bool, addr: str, data_dir: Path) -> None:
    """Upload a signed bundle (streamed, or by pre-signed PUT when bundles live on S3);
    prints its id and sha256 once the platform has verified it."""
    import json

    from trace_platform.clients.api.bundles import Bundle, BundlesClient
    from trace_platform.clients.channel import user_channel

    token = user_token(data_dir)

    async def go() -> Bundle:
        async with user_channel(addr) as channel:
            return await BundlesClient(channel, token=token).upload(archive, name=name, runtime=runtime or "")

    bundle = run(go(), addr)
    if as_json:
        fields = ("id", "name", "sha256", "size_bytes", "runtime", "entrypoint", "state")
        click.echo(json.dumps({f: getattr(bundle, f) for f in fields}))
    else:
        click.echo(f"bundle {bundle.id} sha256 {bundle.sha256} ({bundle.runtime}, {bundle.size_bytes} bytes)")
