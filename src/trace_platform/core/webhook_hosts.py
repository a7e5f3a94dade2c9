"""The host a webhook URL names, in the one form the platform will accept.

HTTP clients normalise a host before they dial it: aiohttp (through yarl) applies IDNA
with NFKC, so ``127。0。0。1`` (ideographic full stops), circled or fullwidth digits become
the IP literal ``127.0.0.1``; the C resolver then reads ``2130706433``, ``0177.0.0.1``,
``0x7f.1`` or ``127.1`` as IPv4 too. A check made on the text as written is therefore a
check on a different host than the one contacted. The invariant kept here: a host is
accepted only when it is already in its final form, so that no normalisation can turn
it into something else:

- a name made of plain ASCII letters, digits and hyphens (LDH) in dot-separated labels,
  lower-cased, whose last label does not start with a digit (then nothing reads it as
  an IPv4 number); an internationalised name is written in its ``xn--`` form;
- or a canonical dotted-quad IPv4 literal (four decimal parts, no leading zeros);
- or a bracketed IPv6 literal without a zone id.

No userinfo (``http://evil@127.0.0.1`` names 127.0.0.1, whatever it looks like), no
percent-escapes, no trailing dot. Everything else is ``DESTINATION_FORBIDDEN``. Whether
an accepted address (literal or resolved) may be contacted is the sender's policy.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from trace_platform.core.errors import InvalidArgument

DESTINATION_FORBIDDEN = "DESTINATION_FORBIDDEN"

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_DOTTED_QUAD = re.compile(r"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}")
MAX_HOST_CHARS = 253


@dataclass(frozen=True)
class WebhookHost:
    """``host`` is a lower-case LDH name, or the compressed text of an IP address."""

    host: str
    address: ipaddress.IPv4Address | ipaddress.IPv6Address | None  # set for an IP literal

    def same_as(self, dialled: str) -> bool:
        """Whether ``dialled`` (the host the HTTP client will connect to) is this host."""
        if self.address is None:
            return dialled == self.host
        try:
            return ipaddress.ip_address(dialled) == self.address
        except ValueError:
            return False


def _forbidden(message: str) -> InvalidArgument:
    return InvalidArgument(DESTINATION_FORBIDDEN, message, field="url")


def webhook_host(url: str) -> WebhookHost:
    """The host of ``url`` if it is in its final form (see the module docstring)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        raise _forbidden("webhook url is malformed") from None
    authority = parts.netloc
    if "@" in authority:
        raise _forbidden("webhook url may not carry userinfo")
    raw = authority
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0 or (raw[end + 1 :] and not raw[end + 1 :].startswith(":")):
            raise _forbidden("webhook url has a malformed IPv6 literal")
        literal = raw[1:end]
        if "%" in literal or not literal.isascii():
            raise _forbidden("webhook IPv6 literal may not carry a zone id")
        try:
            v6 = ipaddress.IPv6Address(literal)
        except ValueError:
            raise _forbidden("webhook url has a malformed IPv6 literal") from None
        return WebhookHost(v6.compressed, v6)
    host = raw.rsplit(":", 1)[0] if ":" in raw else raw
    if not host or len(host) > MAX_HOST_CHARS or not host.isascii():
        raise _forbidden("webhook host must be plain ASCII (write a name in its xn-- form)")
    if _DOTTED_QUAD.fullmatch(host):
        try:
            v4 = ipaddress.IPv4Address(host)
        except ValueError:
            raise _forbidden("webhook url has a malformed IPv4 literal") from None
        return WebhookHost(v4.compressed, v4)
    host = host.lower()
    labels = host.split(".")
    if not all(_LABEL.fullmatch(label) for label in labels):
        raise _forbidden("webhook host must be letters, digits, hyphens and dots")
    if labels[-1][0].isdigit():
        raise _forbidden("webhook host is a numeric address in a non-canonical form")
    return WebhookHost(host, None)
