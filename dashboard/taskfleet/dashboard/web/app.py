"""``create_app``: the dashboard's ASGI app (FastAPI) from its parts: the ``App`` whose fleet it shows, the history,
the Kubernetes reader (optional) and the settings.

- ``/api/...``: the JSON API, described by ``/api/openapi.json`` (FastAPI's docs pages are off: they load their
  assets from a CDN, and every asset here is served by the dashboard itself).
- ``/``, ``/queues``, ``/workers``, ``/tasks``, ``/tasks/{id}``, ``/autoscaling``, ``/actions``: the pages.
- ``/static/...``: our CSS and JS, and uPlot (``static/vendor/``).
- ``/login``: the token form (sets an HttpOnly, SameSite=Strict cookie) when tokens are configured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from taskfleet import __version__
from taskfleet.app import App
from taskfleet.dashboard.model import History, KubeSource
from taskfleet.dashboard.settings import DashboardSettings
from taskfleet.dashboard.web import actions, api_fleet, api_tasks, pages
from taskfleet.dashboard.web.auth import TOKEN_COOKIE, Authenticator, Forbidden, NotAuthenticated
from taskfleet.dashboard.web.deps import Context
from taskfleet.dashboard.web.fleet import Fleet, FleetError

HERE = Path(__file__).parent
_SECURITY_HEADERS = {
    # Our JS and CSS only, from our own origin; uPlot sets element styles from script, which CSP allows.
    "content-security-policy": "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'",
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
}


def create_app(*, app: App, history: History, kube: KubeSource | None, settings: DashboardSettings) -> FastAPI:
    """The dashboard for ``app``'s fleet. ``settings.check_exposure`` is the caller's (the command's) to run: a
    test serves through a client, not on an address."""
    web = FastAPI(title="Taskfleet dashboard", version=__version__, openapi_url="/api/openapi.json",
                  docs_url=None, redoc_url=None,
                  description="The JSON API of the Taskfleet dashboard (docs/dashboard.md). Times are Unix seconds.")
    authenticator = Authenticator(settings.auth, trust_forwarded_headers=settings.trust_forwarded_headers)
    web.state.ctx = Context(fleet=Fleet(app), history=history, kube=kube, settings=settings,
                            authenticator=authenticator)
    web.state.templates = pages.make_templates(str(HERE / "templates"))
    web.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for router in (api_tasks.router, api_fleet.router, actions.router, pages.router):
        web.include_router(router)
    _add_login(web, authenticator)

    @web.get("/healthz", include_in_schema=False)
    def healthz() -> PlainTextResponse:
        """For probes: no auth, nothing about the fleet (it answers at the root and under the prefix)."""
        return PlainTextResponse("ok")
    _add_error_handlers(web)

    @web.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        for name, value in _SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    web.add_middleware(PrefixMiddleware, prefix=settings.url_prefix,
                       trust_forwarded_prefix=settings.trust_forwarded_headers)
    return web


class PrefixMiddleware:
    """Serve under a path prefix: the request's ``root_path`` becomes the prefix (``--url-prefix``, or the proxy's
    ``X-Forwarded-Prefix`` when trusted), which the routes strip and the pages put in front of every URL. A proxy
    may pass the prefix on or strip it: both route the same."""

    def __init__(self, app: ASGIApp, *, prefix: str, trust_forwarded_prefix: bool) -> None:
        self.app = app
        self.prefix = prefix.rstrip("/")
        self.trust = trust_forwarded_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            prefix = self.prefix
            if self.trust:
                for name, value in scope.get("headers", ()):
                    if name == b"x-forwarded-prefix":
                        forwarded = value.decode("latin-1").split(",")[0].strip().rstrip("/")
                        if forwarded.startswith("/") and "//" not in forwarded:
                            prefix = forwarded
            if prefix:
                scope = dict(scope, root_path=prefix)
        await self.app(scope, receive, send)


def _add_login(web: FastAPI, authenticator: Authenticator) -> None:
    @web.get("/login", include_in_schema=False)
    def login_form(request: Request) -> Response:
        return _login_page(request, None)

    @web.post("/login", include_in_schema=False)
    async def login(request: Request) -> Response:
        try:
            authenticator.check_same_origin(request)
        except Forbidden as exc:
            return _login_page(request, exc.reason, status_code=403)
        fields = parse_qs((await request.body()).decode())
        token = (fields.get("token") or [""])[0].strip()
        if not authenticator.token_role(token):
            return _login_page(request, "That token is not valid.", status_code=401)
        root = request.scope.get("root_path", "").rstrip("/")
        response = RedirectResponse(f"{root}/", status_code=303)
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict", path=f"{root}/",
                            secure=authenticator.origin_of(request).startswith("https:"))
        return response

    @web.post("/logout", include_in_schema=False)
    def logout(request: Request) -> Response:
        root = request.scope.get("root_path", "").rstrip("/")
        response = RedirectResponse(f"{root}/login", status_code=303)
        response.delete_cookie(TOKEN_COOKIE, path=f"{root}/")
        return response


def _login_page(request: Request, error: str | None, *, status_code: int = 200) -> Response:
    templates: Jinja2Templates = request.app.state.templates
    return templates.TemplateResponse(request, "login.html", {"url": pages.url_for_root(request), "error": error},
                                      status_code=status_code)


def _is_api(request: Request) -> bool:
    root = request.scope.get("root_path", "")
    path = request.url.path
    return path.startswith(f"{root}/api/") or path.startswith("/api/")


def _add_error_handlers(web: FastAPI) -> None:
    @web.exception_handler(NotAuthenticated)
    def not_authenticated(request: Request, exc: NotAuthenticated) -> Response:
        ctx = request.app.state.ctx
        challenge = 'Basic realm="taskfleet", charset="UTF-8"' if exc.basic else 'Bearer realm="taskfleet"'
        headers = {"www-authenticate": challenge}
        if _is_api(request):
            return JSONResponse({"detail": "not authenticated"}, status_code=401, headers=headers)
        tokens = ctx.settings.auth.read_token or ctx.settings.auth.admin_token
        if tokens and not exc.basic:
            root = request.scope.get("root_path", "").rstrip("/")
            return RedirectResponse(f"{root}/login", status_code=303)
        return PlainTextResponse("not authenticated", status_code=401, headers=headers)

    @web.exception_handler(Forbidden)
    def forbidden(request: Request, exc: Forbidden) -> Response:
        return JSONResponse({"detail": exc.reason}, status_code=403)

    @web.exception_handler(FleetError)
    def fleet_error(request: Request, exc: FleetError) -> Response:
        return JSONResponse({"detail": str(exc)}, status_code=502)
