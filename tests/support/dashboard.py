"""Run ``taskfleet dashboard`` as a real process for the browser tests, and nginx as a reverse proxy in front of it.

The dashboard gets a free port, a history file of its own and two tokens (read-only and admin), read from the
environment as in production. ``stop`` SIGTERMs it (SIGKILL after a while), so no test leaves it behind.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.servers import ServerUnavailable, free_port
from tests.support.waiting import wait_for
from tests.support.workers import terminate

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
REPO = Path(__file__).resolve().parents[2]


@dataclass
class DashboardProcess:
    """One ``python -m taskfleet dashboard`` process on 127.0.0.1 and a free port."""

    broker: str
    backend: str | None = None
    app: str | None = None
    url_prefix: str = ""
    extra: list[str] = field(default_factory=list)
    read_token: str = field(default_factory=lambda: "read-" + secrets.token_hex(12))
    admin_token: str = field(default_factory=lambda: "admin-" + secrets.token_hex(12))

    def __post_init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="taskfleet-dashboard-"))
        self.history_path = self.folder / "history.sqlite3"
        self.log_path = self.folder / "dashboard.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The dashboard's root URL (with its prefix), ending in ``/``."""
        return f"{self.origin}{self.url_prefix}/"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "taskfleet", "dashboard", "--host", "127.0.0.1", "--port", str(self.port),
               "--history", str(self.history_path), "--broker", self.broker]
        if self.app:
            cmd += ["-A", self.app]
        if self.backend:
            cmd += ["--result-backend", self.backend]
        if self.url_prefix:
            cmd += ["--url-prefix", self.url_prefix]
        return [*cmd, *self.extra]

    def start(self) -> DashboardProcess:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TASKFLEET_DASHBOARD_READ_TOKEN": self.read_token,
               "TASKFLEET_DASHBOARD_ADMIN_TOKEN": self.admin_token}
        env.pop("TASKFLEET_BROKER_URL", None)
        env.pop("TASKFLEET_RESULT_BACKEND", None)
        with self.log_path.open("wb") as out:
            self.proc = subprocess.Popen(self.command(), cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        wait_for(lambda: self.proc is None or self.proc.poll() is not None or self._answers(), START_TIMEOUT_S,
                 interval=0.1, message=f"the dashboard did not answer:\n{self.log_text()}")
        assert self.proc.poll() is None, f"the dashboard exited ({self.proc.returncode}):\n{self.log_text()}"
        return self

    def _answers(self) -> bool:
        """Whether the dashboard answers its API (``/api/whoami`` with the read-only token)."""
        request = urllib.request.Request(self.url + "api/whoami",
                                         headers={"Authorization": f"Bearer {self.read_token}"})
        try:
            with urllib.request.urlopen(request, timeout=1.0) as response:
                return bool(response.status == 200)
        except OSError:  # refused while starting (urllib's HTTPError is one too)
            return False

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, STOP_TIMEOUT_S)
        shutil.rmtree(self.folder, ignore_errors=True)


NGINX_CONF = """\
daemon off;
pid {folder}/nginx.pid;
error_log {folder}/error.log warn;
worker_processes 1;
events {{ worker_connections 64; }}
http {{
    access_log {folder}/access.log;
    client_body_temp_path {folder}/body;
    proxy_temp_path {folder}/proxy;
    fastcgi_temp_path {folder}/fastcgi;
    uwsgi_temp_path {folder}/uwsgi;
    scgi_temp_path {folder}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location {prefix}/ {{
            proxy_pass http://127.0.0.1:{upstream}{upstream_path}/;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-Proto $scheme;
            proxy_set_header X-Forwarded-Prefix {prefix};
        }}
        location / {{ return 404 "not the dashboard\\n"; }}
    }}
}}
"""


class NginxProxy:
    """Debian's nginx on a free port, serving the dashboard under ``prefix`` (and nothing else), as a cluster's
    ingress would, with ``X-Forwarded-Prefix`` set. ``strip_prefix``: the dashboard gets paths without the prefix
    (it learns it from the header), else with it (it was told with ``--url-prefix``). ``ServerUnavailable`` when
    nginx is not installed."""

    def __init__(self, *, upstream_port: int, prefix: str, strip_prefix: bool = False) -> None:
        binary = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
        if not binary:
            raise ServerUnavailable("nginx is not installed (apt-get install nginx; scripts/ensure-servers.sh)")
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="taskfleet-nginx-"))
        conf = self.folder / "nginx.conf"
        conf.write_text(NGINX_CONF.format(folder=self.folder, port=self.port, upstream=upstream_port, prefix=prefix,
                                          upstream_path="" if strip_prefix else prefix))
        self.proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(self.folder)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.STDOUT)
        wait_for(lambda: self.proc.poll() is not None or self._listening(), START_TIMEOUT_S, interval=0.05,
                 message="nginx did not start")
        if self.proc.poll() is not None:
            raise ServerUnavailable(f"nginx exited: {(self.folder / 'error.log').read_text(errors='replace')}")
        self.origin = f"http://127.0.0.1:{self.port}"

    def _listening(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=0.5):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False

    def close(self) -> None:
        terminate(self.proc, STOP_TIMEOUT_S)
        shutil.rmtree(self.folder, ignore_errors=True)
