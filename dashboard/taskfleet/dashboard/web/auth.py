"""Who is asking, and may they act: bearer tokens (or the login form's cookie), basic auth, an authenticating
proxy's header, or nobody at all on loopback; and the same-origin check that keeps a page elsewhere from making a
signed-in browser act (CSRF).

Two roles (``settings.ROLES``): read-only sees everything; admin may also act. A token or password is compared in
constant time and never logged or echoed.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.requests import Request

from taskfleet.dashboard.settings import ADMIN, READ_ONLY, AuthSettings, is_loopback

#: The cookie the login form sets with a token (HttpOnly, SameSite=Strict, scoped to the dashboard's path).
TOKEN_COOKIE = "taskfleet_dashboard_token"
_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True, slots=True)
class Principal:
    """The person (or program) behind a request: a name for the page's corner, a role, and how they got in."""

    name: str
    role: str
    via: str  # loopback, token, cookie, basic, proxy

    @property
    def is_admin(self) -> bool:
        return self.role == ADMIN


class NotAuthenticated(Exception):
    """No credential was recognised: the app answers 401 (API) or sends a browser to the login page."""

    def __init__(self, *, basic: bool) -> None:
        super().__init__("not authenticated")
        self.basic = basic


class Forbidden(Exception):
    """Recognised, but not allowed (read-only role, or a cross-origin POST): 403."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Authenticator:
    """Turns a request's credentials into a ``Principal`` under one ``AuthSettings``."""

    def __init__(self, auth: AuthSettings, *, trust_forwarded_headers: bool = False) -> None:
        self.auth = auth
        self.trust_forwarded_headers = trust_forwarded_headers

    def identify(self, request: Request) -> Principal:
        """The principal of ``request``; ``NotAuthenticated`` when nothing configured recognises it. With no auth
        configured (which ``DashboardSettings.check_exposure`` allows only on loopback) everyone is the local
        admin."""
        auth = self.auth
        if not auth.enabled:
            self._check_loopback_host(request)
            return Principal("local", ADMIN, "loopback")
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() == "bearer" and value:
            found = self.token_role(value.strip())
            if found:
                return Principal(found, found, "token")
        if scheme.lower() == "basic" and value and auth.basic_users:
            user = self._basic(value.strip())
            if user:
                return user
        cookie = request.cookies.get(TOKEN_COOKIE)
        if cookie:
            found = self.token_role(cookie)
            if found:
                return Principal(found, found, "cookie")
        if auth.proxy_user_header:
            name = request.headers.get(auth.proxy_user_header, "").strip()
            if name:
                return Principal(name, self._proxy_role(request), "proxy")
        raise NotAuthenticated(basic=bool(auth.basic_users))

    def _check_loopback_host(self, request: Request) -> None:
        """Without auth, only a loopback ``Host`` is served: a page elsewhere whose name is rebound to 127.0.0.1
        (DNS rebinding) sends its own name as ``Host``, and is refused."""
        host = urlsplit(f"//{request.headers.get('host', '')}").hostname or ""
        if not is_loopback(host):
            raise Forbidden(f"no auth is configured, so only a loopback Host is served, not {host!r}")

    def token_role(self, token: str) -> str | None:
        """The role a token gives, or None (every configured token is compared, in constant time)."""
        role = None
        for configured, gives in ((self.auth.admin_token, ADMIN), (self.auth.read_token, READ_ONLY)):
            if configured and hmac.compare_digest(configured.encode(), token.encode()):
                role = gives
        return role

    def _basic(self, value: str) -> Principal | None:
        try:
            name, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        found = None
        for user in self.auth.basic_users:
            same = hmac.compare_digest(user.password.encode(), password.encode())
            if user.name == name and same:
                found = Principal(name, user.role, "basic")
        return found

    def _proxy_role(self, request: Request) -> str:
        header = self.auth.proxy_groups_header
        if not header:
            return READ_ONLY
        groups = {g.strip() for g in request.headers.get(header, "").split(",")}
        return ADMIN if groups & set(self.auth.proxy_admin_groups) else READ_ONLY

    # -- acting -----------------------------------------------------------------------------------------------------

    def check_same_origin(self, request: Request) -> None:
        """``Forbidden`` for an unsafe request whose ``Origin`` (or, without one, ``Referer``) is not this
        dashboard. A request with an ``Authorization`` header is exempt: a browser never adds one by itself, so a
        foreign page cannot forge it (cookies, basic auth and proxy sessions are what CSRF rides on)."""
        if request.method not in _UNSAFE_METHODS:
            return
        if request.headers.get("authorization", "").lower().startswith("bearer "):
            return
        expected = self.origin_of(request)
        origin = request.headers.get("origin")
        if origin and origin != "null":
            if origin.rstrip("/") != expected:
                raise Forbidden("cross-origin request refused (Origin is not this dashboard)")
            return
        referer = request.headers.get("referer")
        if referer:
            parts = urlsplit(referer)
            if f"{parts.scheme}://{parts.netloc}" != expected:
                raise Forbidden("cross-origin request refused (Referer is not this dashboard)")
            return
        raise Forbidden("request refused: no Origin or Referer header to prove it comes from the dashboard")

    def origin_of(self, request: Request) -> str:
        """``scheme://host[:port]`` of the dashboard as the browser sees it (the proxy's, when trusted)."""
        scheme = request.url.scheme
        host = request.headers.get("host", request.url.netloc)
        if self.trust_forwarded_headers:
            scheme = request.headers.get("x-forwarded-proto", scheme).split(",")[0].strip()
            host = request.headers.get("x-forwarded-host", host).split(",")[0].strip()
        return f"{scheme}://{host}"

    def require_admin(self, request: Request, principal: Principal) -> None:
        """``Forbidden`` unless ``principal`` is admin and the request comes from this dashboard."""
        if not principal.is_admin:
            raise Forbidden(f"{principal.name!r} has the {principal.role} role: actions need the admin role")
        self.check_same_origin(request)
