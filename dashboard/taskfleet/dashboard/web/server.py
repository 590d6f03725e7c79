"""Serving the dashboard with uvicorn (the only place that imports it)."""

from __future__ import annotations

import uvicorn
from fastapi import FastAPI

from taskfleet.dashboard.settings import DashboardSettings


def serve(web: FastAPI, *, settings: DashboardSettings) -> None:
    """Serve ``web`` on ``settings.host``/``port`` until SIGINT or SIGTERM. Refuses (``ValueError``) to serve
    without auth off loopback. uvicorn's own proxy-header handling is off: the prefix and the forwarded origin are
    the app's (``settings.trust_forwarded_headers``), and no client address is taken from a header."""
    settings.check_exposure()
    config = uvicorn.Config(web, host=settings.host, port=settings.port, proxy_headers=False, server_header=False,
                            log_level="info")
    uvicorn.Server(config).run()
