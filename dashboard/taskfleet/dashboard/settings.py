"""The dashboard's settings: where it serves, under which path, and who may see and act.

Typed, frozen, keyword-only dataclasses (an unknown option is a ``TypeError``); secrets (tokens, passwords) are
read from the environment by the entrypoint (``taskfleet dashboard``), never only from argv, and never printed:
their ``repr`` hides them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

READ_ONLY, ADMIN = "read-only", "admin"
#: The two roles: ``read-only`` sees every page and API answer; ``admin`` may also act (revoke, purge, ...).
ROLES = (READ_ONLY, ADMIN)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5555  # Flower's, so a migrating team finds it where they expect
DEFAULT_REFRESH_INTERVAL_S = 5.0
DEFAULT_RANGE_S = 3600.0


def _check_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    return role


@dataclass(frozen=True, slots=True, kw_only=True)
class BasicUser:
    """A basic-auth user: name, password (compared in constant time) and role."""

    name: str
    password: str = field(repr=False)
    role: str = READ_ONLY

    def __post_init__(self) -> None:
        _check_role(self.role)
        if not self.name or ":" in self.name:
            raise ValueError("a basic-auth user name is non-empty and has no ':'")


@dataclass(frozen=True, slots=True, kw_only=True)
class AuthSettings:
    """Who may use the dashboard. With none of these set, the dashboard serves only on a loopback address, and the
    local user is admin. Several may be set at once: a request is let in by the first that recognises it."""

    #: Bearer token of the read-only role (``Authorization: Bearer ...`` or the login form's cookie).
    read_token: str | None = field(default=None, repr=False)
    #: Bearer token of the admin role.
    admin_token: str | None = field(default=None, repr=False)
    #: Basic-auth users, each with a role.
    basic_users: tuple[BasicUser, ...] = field(default=(), repr=False)
    #: Trust this header as the user name set by an authenticating proxy (e.g. ``X-Forwarded-User``). Only safe
    #: when nothing but the proxy can reach the dashboard.
    proxy_user_header: str | None = None
    #: The proxy's header with the user's groups (comma separated); a user in one of ``proxy_admin_groups`` is
    #: admin, others read-only. None: every user the proxy lets in is read-only.
    proxy_groups_header: str | None = None
    #: The groups (from ``proxy_groups_header``) whose members are admin.
    proxy_admin_groups: tuple[str, ...] = ("admin",)

    def __post_init__(self) -> None:
        if self.read_token is not None and self.read_token == self.admin_token:
            raise ValueError("the read-only and the admin token must differ")
        for token in (self.read_token, self.admin_token):
            if token is not None and len(token) < 16:
                raise ValueError("a dashboard token has at least 16 characters")

    @property
    def enabled(self) -> bool:
        """Whether any way of authenticating is configured (else: loopback only)."""
        return bool(self.read_token or self.admin_token or self.basic_users or self.proxy_user_header)


@dataclass(frozen=True, slots=True, kw_only=True)
class DashboardSettings:
    """How ``taskfleet dashboard`` serves."""

    #: Address to listen on; without auth only a loopback address is allowed.
    host: str = DEFAULT_HOST
    #: TCP port; 0 picks a free one.
    port: int = DEFAULT_PORT
    #: Path prefix the dashboard is served under behind a reverse proxy (``/taskfleet``); "" at the root.
    url_prefix: str = ""
    #: Take the prefix from the proxy's ``X-Forwarded-Prefix`` header (and the scheme and host from
    #: ``X-Forwarded-Proto``/``-Host`` for the same-origin check); only when a proxy you trust sets them.
    trust_forwarded_headers: bool = False
    #: How often the pages refresh their live parts, in seconds.
    refresh_interval_s: float = DEFAULT_REFRESH_INTERVAL_S
    #: The time range the charts show by default, in seconds back from now.
    default_range_s: float = DEFAULT_RANGE_S
    auth: AuthSettings = field(default_factory=AuthSettings)

    def __post_init__(self) -> None:
        if self.url_prefix and (not self.url_prefix.startswith("/") or self.url_prefix.endswith("/")):
            raise ValueError(f"url_prefix starts with '/' and does not end with one: {self.url_prefix!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port out of range: {self.port}")
        if self.refresh_interval_s <= 0 or self.default_range_s <= 0:
            raise ValueError("refresh_interval_s and default_range_s are > 0")

    def check_exposure(self) -> None:
        """Refuse (``ValueError``) to serve without auth on anything but a loopback address: the dashboard shows
        task arguments and can purge queues."""
        if not self.auth.enabled and not is_loopback(self.host):
            raise ValueError(
                f"refusing to serve the dashboard on {self.host!r} without auth: set a token "
                "(TASKFLEET_DASHBOARD_ADMIN_TOKEN / TASKFLEET_DASHBOARD_READ_TOKEN), basic-auth users "
                "(TASKFLEET_DASHBOARD_USERS) or --proxy-user-header, or serve on 127.0.0.1")


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or ``localhost``) is a loopback address; ``0.0.0.0``/``::`` are not."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
