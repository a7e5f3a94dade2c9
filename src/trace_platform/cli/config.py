"""`trace config show`: the settings this environment gives, secrets masked (docs/configuration.md)."""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import click

from trace_platform.cli.common import CliUsageError


@click.group("config")
def config_group() -> None:
    """The settings read from TRACE_* variables."""


@config_group.command("show")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: field path -> variable, value, source.")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="The data directory the data-dir defaults are relative to (else TRACE_DATA_DIR, ~/.trace/lite).",
)
@click.option("--lite", is_flag=True, help="As `trace lite up` would run: its credentials, embedded PostgreSQL.")
def show(as_json: bool, data_dir: Path | None, lite: bool) -> None:
    """Print every setting: its variable, where its value came from, and the value
    (tokens, secrets and URL passwords masked; RPC pools by host only).

    A value that cannot be used stops here as it would stop a service: error, exit 2."""
    from trace_platform.core.config import SettingsError
    from trace_platform.core.settings_env import load
    from trace_platform.core.settings_show import as_json as to_json
    from trace_platform.core.settings_show import as_text

    try:
        loaded = load(os.environ)
    except SettingsError as exc:
        raise CliUsageError(f"{exc.variable}: {exc.problem}") from None
    if data_dir is not None:
        loaded = replace(
            loaded,
            settings=replace(loaded.settings, data_dir=data_dir),
            sources={**loaded.sources, "data_dir": "--data-dir"},
        )
    if as_json:
        click.echo(json.dumps(to_json(loaded, lite=lite), indent=2))
    else:
        click.echo(as_text(loaded, lite=lite))
