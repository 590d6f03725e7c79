"""The dashboard's answer times and memory over HTTP, on a large history: the real ``taskfleet dashboard`` process
(uvicorn, auth on) serving a history file that ``bench/dashboard_history.py --keep`` filled, every page and every API
call the pages make timed from a client on loopback, then the server's resident memory.

    nice -n 19 .venv/bin/python bench/dashboard_history.py --path /tmp/hist1m.db --keep   # fill once (~4 min)
    .venv/bin/python bench/dashboard_http.py --history /tmp/hist1m.db

Each URL is fetched ``--runs`` times on one keep-alive connection after one warm-up; the table shows the median and
the max in milliseconds, client side (request sent to the last byte read). The server's ingester runs too, on an
empty SQLite broker, so what is measured is what a dashboard does between events.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "dashboard"))
sys.path.insert(0, str(ROOT / "sdk"))

from taskfleet.dashboard import model  # noqa: E402
from taskfleet.dashboard.history.settings import HistorySettings  # noqa: E402
from taskfleet.dashboard.history.store import HistoryStore  # noqa: E402

TOKEN = "bench-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def targets(history: Path) -> list[tuple[str, str]]:
    """(label, path) of every page and every API call the pages make, with ids and cursors taken from the file."""
    store = HistoryStore(HistorySettings(path=str(history)))
    try:
        first = store.tasks(model.TaskQuery(limit=50))
        cursor = first.next_cursor
        for _ in range(19):  # the 21st page
            assert cursor is not None
            cursor = store.tasks(model.TaskQuery(limit=50, before=cursor)).next_cursor
        failed = store.tasks(model.TaskQuery(state=model.FAILURE, limit=1)).tasks[0]
        names = store.task_names()
    finally:
        store.close()
    task_id, name = failed.task_id, names[3]
    now = time.time()
    day = f"since={now - 86_400:.0f}&until={now:.0f}"
    q = urllib.parse.quote
    return [
        ("page: overview", "/"),
        ("page: queues", "/queues"),
        ("page: workers", "/workers"),
        ("page: tasks", "/tasks"),
        ("page: tasks, state + name", f"/tasks?state=FAILURE&name={q(name)}"),
        ("page: tasks, args text", "/tasks?text=customer-4242"),
        ("page: task (failed, with traceback)", f"/tasks/{task_id}"),
        ("page: autoscaling", "/autoscaling"),
        ("api: tasks, first page", "/api/tasks"),
        ("api: tasks, 21st page (cursor)", f"/api/tasks?before={q(str(cursor))}"),
        ("api: tasks, state FAILURE", "/api/tasks?state=FAILURE"),
        ("api: tasks, args text", "/api/tasks?text=ord-77777"),
        ("api: tasks, id prefix", f"/api/tasks?task_id={task_id[:8]}"),
        ("api: task", f"/api/tasks/{task_id}"),
        ("api: stats, last hour", "/api/stats"),
        ("api: stats, 24 h", f"/api/stats?{day}"),
        ("api: stats, 24 h, one name", f"/api/stats?{day}&name={q(name)}"),
        ("api: task names", "/api/task-names"),
        ("api: queues", "/api/queues"),
        ("api: queue samples, last hour", "/api/queue-samples"),
        ("api: workers", "/api/workers"),
    ]


def fetch(conn: http.client.HTTPConnection, path: str) -> float:
    began = time.perf_counter()
    conn.request("GET", path, headers={"Authorization": f"Bearer {TOKEN}"})
    response = conn.getresponse()
    body = response.read()
    elapsed = time.perf_counter() - began
    if response.status != 200:
        raise SystemExit(f"GET {path}: {response.status} {body[:200]!r}")
    return elapsed


def memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def main() -> int:
    cli = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cli.add_argument("--history", required=True, help="a history file filled by bench/dashboard_history.py --keep")
    cli.add_argument("--runs", type=int, default=9)
    args = cli.parse_args()
    history = Path(args.history)
    if not history.exists():
        raise SystemExit(f"{history}: no such history file (fill it with bench/dashboard_history.py --keep)")
    work = Path(tempfile.mkdtemp(prefix="tf-dash-bench-"))
    port = free_port()
    env = {**os.environ, "TASKFLEET_DASHBOARD_ADMIN_TOKEN": TOKEN,
           "PYTHONPATH": os.pathsep.join(str(ROOT / r) for r in ("sdk", "worker", "operator", "cli", "dashboard"))}
    # A long retention: the synthetic history spans the last day and must not be pruned while it is measured.
    server = subprocess.Popen(
        [sys.executable, "-m", "taskfleet", "dashboard", "--app-name", "bench", "--broker",
         f"sqlite:///{work}/broker.db", "--history", str(history), "--retention-days", "3650",
         "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=open(work / "dashboard.log", "wb"))  # noqa: SIM115
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                fetch(conn, "/healthz")
                break
            except (OSError, http.client.HTTPException):
                if time.monotonic() > deadline or server.poll() is not None:
                    log = (work / "dashboard.log").read_text()[-2000:]
                    raise SystemExit(f"the dashboard did not start: {log}") from None
                time.sleep(0.2)
        rows = []
        for label, path in targets(history):
            fetch(conn, path)  # warm-up
            times = [fetch(conn, path) for _ in range(args.runs)]
            rows.append((label, statistics.median(times) * 1000, max(times) * 1000))
        rss, hwm = memory_mb(server.pid)
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"history: {history} ({history.stat().st_size / 2**20:,.0f} MB)")
    print(f"{'request':<40} {'median ms':>10} {'max ms':>8}")
    for label, median, worst in rows:
        print(f"{label:<40} {median:>10.1f} {worst:>8.1f}")
    print(f"dashboard process after the requests: RSS {rss:.0f} MB, peak RSS {hwm:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
