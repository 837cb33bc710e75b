"""Where the UI is served, and whether that is safe without a login.

The app has no authentication of its own, so anyone who can reach its port sees every indexed photo.
Loopback addresses and Unix sockets are reachable from this computer only; any other address, and the
empty one (Streamlit's default, which listens on every interface), is reachable from the network. Both
``loupe ui`` (before it starts Streamlit) and the app (on every run, whoever started it) ask
:func:`remote_serving_refusal`, and only ``ui.allow_remote: true`` in the config lets a remote address
through.
"""

from __future__ import annotations

import ipaddress
import logging

from core.errors import LoupeError

logger = logging.getLogger(__name__)

LOOPBACK_NAMES = frozenset({"localhost", "localhost."})
UNIX_SOCKET_PREFIX = "unix://"

EXPOSING_HELP = """\
The app has no login of its own: anyone who can reach this address would see every indexed photo.
To use Loupe from other computers:

- **Keep it on loopback** (`loupe ui` listens on 127.0.0.1) and put a reverse proxy in front that does
  TLS and authentication (Caddy with `basic_auth`, nginx with `auth_basic`, or an SSO proxy such as
  oauth2-proxy); proxy WebSockets too, Streamlit needs them.
- **Or reach it through an SSH tunnel**: `ssh -L 8501:127.0.0.1:8501 server`, then open
  http://localhost:8501.
- Only on a network you fully trust, or behind such a proxy on another host, set `allow_remote: true`
  in the `ui:` section of the config file, then `loupe ui --address ADDRESS`.
"""


class RemoteServingRefusedError(LoupeError):
    """The UI was asked to listen on an address other computers can reach, and the config does not allow it."""


def describe_address(address: str | None) -> str:
    """The address as people should read it: Streamlit's unset address means every interface."""
    return address if address else "every network interface"


def is_local_address(address: str | None) -> bool:
    """True when only this computer can connect: a loopback IP (v4 or v6), ``localhost`` or a Unix socket.

    ``None`` and ``""`` (Streamlit's default), the wildcards ``0.0.0.0`` and ``::``, LAN and public
    addresses, and host names other than ``localhost`` are not local: a name is not resolved here, because
    what it resolves to can change after this check.
    """
    if not address:
        return False
    text = address.strip()
    if text.startswith(UNIX_SOCKET_PREFIX):
        return True
    if text.lower() in LOOPBACK_NAMES:
        return True
    try:
        ip = ipaddress.ip_address(text.removeprefix("[").removesuffix("]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def remote_serving_refusal(address: str | None, allow_remote: bool) -> str | None:
    """Why the UI must not show photos when served on ``address``, or None when it may."""
    if is_local_address(address) or allow_remote:
        return None
    return (
        f"Loupe is served on {describe_address(address)}, which other computers can reach, and it has no login "
        "of its own, so it shows no photo there. Serve it on loopback (`loupe ui` does), or set "
        '`ui.allow_remote: true` in the config once it sits behind authentication (README, "Exposing the UI").'
    )


def check_serving_address(address: str | None, allow_remote: bool) -> None:
    """Raise :class:`RemoteServingRefusedError` unless ``address`` is local or remote serving is allowed."""
    if remote_serving_refusal(address, allow_remote) is not None:
        raise RemoteServingRefusedError(
            f"refusing to serve the UI on {describe_address(address)}, which other computers can reach: Loupe has "
            "no login of its own. Keep the default loopback address (127.0.0.1) behind a reverse proxy or an SSH "
            'tunnel, or set `ui.allow_remote: true` in the config (README, "Exposing the UI").'
        )
    if not is_local_address(address):
        logger.warning("serving the UI on %s (ui.allow_remote is true)", describe_address(address))
