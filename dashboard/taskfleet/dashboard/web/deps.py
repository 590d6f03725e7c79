"""What every route needs: the dashboard's parts (one ``Context`` per app) and the request's principal."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from taskfleet.dashboard.model import History, KubeSource
from taskfleet.dashboard.settings import DashboardSettings
from taskfleet.dashboard.web.auth import Authenticator, Principal
from taskfleet.dashboard.web.fleet import Fleet


@dataclass(frozen=True, slots=True)
class Context:
    """The parts ``create_app`` was given."""

    fleet: Fleet
    history: History
    kube: KubeSource | None
    settings: DashboardSettings
    authenticator: Authenticator


def context(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


def principal(request: Request) -> Principal:
    """The request's principal (``NotAuthenticated`` when there is none); kept on the request for the templates."""
    found = context(request).authenticator.identify(request)
    request.state.principal = found
    return found


def admin(request: Request, who: Annotated[Principal, Depends(principal)]) -> Principal:
    """The principal, if admin and asking from this dashboard (``Forbidden`` otherwise)."""
    context(request).authenticator.require_admin(request, who)
    return who


Ctx = Annotated[Context, Depends(context)]
Who = Annotated[Principal, Depends(principal)]
Admin = Annotated[Principal, Depends(admin)]
