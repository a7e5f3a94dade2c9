"""`trace alerts create|list|get|update|disable|events|deliveries` (user API).

A webhook URL may hold a secret: give it with --webhook, or one per line in a file
(--webhooks-from FILE, `-` for stdin) to keep it out of the shell's history and the
process list. No command prints a URL back: a webhook shows as scheme+host and its key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, TypeVar

import click

from trace_platform.cli.api_call import call_api, echo_json, when
from trace_platform.cli.common import CliUsageError, addr_option, data_dir_option

if TYPE_CHECKING:
    import grpc

    from trace_platform.clients.api.alerts import AlertsClient
    from trace_platform.core.alert_api import AlertDeliveryInfo, AlertEventInfo, AlertInfo

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
severity_option = click.option("--severity", type=click.Choice(["info", "warning", "critical"]))
webhook_options = [
    click.option("--webhook", "webhooks", multiple=True, metavar="URL", help="A webhook URL (repeatable)."),
    click.option(
        "--webhooks-from", "webhooks_file", type=click.File("r"), help="Webhook URLs, one per line ('-': stdin)."
    ),
]


def _with_webhooks(f: F) -> F:
    for option in reversed(webhook_options):
        f = option(f)
    return f


def _urls(webhooks: tuple[str, ...], webhooks_file: IO[str] | None) -> list[str]:
    urls = list(webhooks)
    if webhooks_file is not None:
        urls += [line.strip() for line in webhooks_file if line.strip()]
    return urls


def _client(channel: grpc.aio.Channel, token: str) -> AlertsClient:
    from trace_platform.clients.api.alerts import AlertsClient

    return AlertsClient(channel, token=token)


def _show(a: AlertInfo) -> None:
    state = "enabled" if a.enabled else "disabled"
    click.echo(f"{a.alert_id}  {a.name}  {state}  severity={a.severity or '-'}  created {when(a.created_at)}")
    if a.description:
        click.echo(f"  {a.description}")
    for w in a.webhooks:
        click.echo(f"  webhook {w.display}  ({w.key})")


@click.group("alerts")
def alerts_group() -> None:
    """Alert definitions, their events and webhook deliveries."""


@alerts_group.command("create")
@click.argument("name")
@_with_webhooks
@click.option("--description", default="")
@severity_option
@click.option("--disabled", is_flag=True, help="Create it disabled.")
@json_option
@addr_option
@data_dir_option
def create(
    name: str,
    webhooks: tuple[str, ...],
    webhooks_file: IO[str] | None,
    description: str,
    severity: str | None,
    disabled: bool,
    as_json: bool,
    addr: str,
    data_dir: Path,
) -> None:
    """Create the alert NAME with its webhooks."""
    urls = _urls(webhooks, webhooks_file)
    alert = call_api(
        addr,
        data_dir,
        lambda ch, t: _client(ch, t).create(
            name, urls, description=description, severity=severity, enabled=not disabled
        ),
    )
    echo_json(alert) if as_json else _show(alert)


@alerts_group.command("list")
@json_option
@addr_option
@data_dir_option
def list_alerts(as_json: bool, addr: str, data_dir: Path) -> None:
    """Every alert of the org."""

    async def go(ch, t):  # type: ignore[no-untyped-def]
        return [a async for a in _client(ch, t).iterate()]

    found = call_api(addr, data_dir, go)
    if as_json:
        echo_json(found)
        return
    for a in found:
        _show(a)
    if not found:
        click.echo("no alerts")


@alerts_group.command("get")
@click.argument("alert_id")
@json_option
@addr_option
@data_dir_option
def get(alert_id: str, as_json: bool, addr: str, data_dir: Path) -> None:
    """One alert."""
    alert = call_api(addr, data_dir, lambda ch, t: _client(ch, t).get(alert_id))
    echo_json(alert) if as_json else _show(alert)


@alerts_group.command("update")
@click.argument("alert_id")
@_with_webhooks
@click.option("--description")
@severity_option
@click.option("--enable/--disable", "enabled", default=None)
@json_option
@addr_option
@data_dir_option
def update(
    alert_id: str,
    webhooks: tuple[str, ...],
    webhooks_file: IO[str] | None,
    description: str | None,
    severity: str | None,
    enabled: bool | None,
    as_json: bool,
    addr: str,
    data_dir: Path,
) -> None:
    """Change only the fields given (webhooks given replace every webhook)."""
    urls = _urls(webhooks, webhooks_file) if webhooks or webhooks_file else None
    if urls is None and description is None and severity is None and enabled is None:
        raise CliUsageError("nothing to change: give --webhook, --description, --severity or --enable/--disable")
    alert = call_api(
        addr,
        data_dir,
        lambda ch, t: _client(ch, t).update(
            alert_id, webhook_urls=urls, description=description, severity=severity, enabled=enabled
        ),
    )
    echo_json(alert) if as_json else _show(alert)


@alerts_group.command("disable")
@click.argument("alert_id")
@json_option
@addr_option
@data_dir_option
def disable(alert_id: str, as_json: bool, addr: str, data_dir: Path) -> None:
    """Stop delivering the alert's new events."""
    alert = call_api(addr, data_dir, lambda ch, t: _client(ch, t).disable(alert_id))
    echo_json(alert) if as_json else _show(alert)


def _event_line(e: AlertEventInfo) -> str:
    where = f"block {e.block_number}" if e.block_number is not None else "-"
    return f"{e.event_id}  {when(e.event_time)}  {e.severity or '-'}  {where}  tx {e.tx_hash or '-'}  {e.payload_json}"


@alerts_group.command("events")
@click.argument("alert_id")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@json_option
@addr_option
@data_dir_option
def events(alert_id: str, limit: int, as_json: bool, addr: str, data_dir: Path) -> None:
    """The alert's events, oldest first."""

    async def go(ch, t):  # type: ignore[no-untyped-def]
        return await _first(_client(ch, t).iterate_events(alert_id, page_size=min(limit, 1000)), limit)

    _show_all(call_api(addr, data_dir, go), as_json, _event_line, "no events")


async def _first(items: AsyncIterator[T], limit: int) -> list[T]:
    """At most ``limit`` items; no page past the one holding the last is fetched."""
    out: list[T] = []
    async for item in items:
        out.append(item)
        if len(out) >= limit:
            break
    return out


def _show_all(found: list[T], as_json: bool, line: Callable[[T], str], none: str) -> None:
    if as_json:
        echo_json(found)
        return
    for item in found:
        click.echo(line(item))
    if not found:
        click.echo(none)


def _delivery_line(d: AlertDeliveryInfo) -> str:
    code = d.last_response_code if d.last_response_code is not None else "-"
    return (
        f"{d.delivery_id}  event {d.event_id}  {d.webhook.display}  {d.status}  attempts={d.attempts}"
        f"  last_code={code}  last_error={d.last_error or '-'}  delivered {when(d.delivered_at)}"
    )


@alerts_group.command("deliveries")
@click.argument("alert_id", required=False, default="")
@click.option("--event", "event_id", default="", help="The deliveries of one event instead.")
@click.option("--limit", type=click.IntRange(1, 100_000), default=100, show_default=True)
@json_option
@addr_option
@data_dir_option
def deliveries(alert_id: str, event_id: str, limit: int, as_json: bool, addr: str, data_dir: Path) -> None:
    """Webhook deliveries of the alert's events (or of one event): status and attempts."""
    if bool(alert_id) == bool(event_id):
        raise CliUsageError("give an ALERT_ID or --event EVENT_ID")

    async def go(ch, t):  # type: ignore[no-untyped-def]
        pages = _client(ch, t).iterate_deliveries(alert_id=alert_id, event_id=event_id, page_size=min(limit, 1000))
        return await _first(pages, limit)

    _show_all(call_api(addr, data_dir, go), as_json, _delivery_line, "no deliveries")
