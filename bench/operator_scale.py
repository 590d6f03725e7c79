"""The operator at scale: API requests per poll cycle and operator memory with N TaskQueues (a benchmark to run and
report in docs/operator.md, not a test).

It starts a private control plane (etcd + kube-apiserver, as the e2e tests do) and a private Redis, creates N
TaskQueues (each with its own broker Secret: the most watches the cache can need), runs ``taskfleet operator
--all-namespaces`` with admin credentials, waits until every TaskQueue has its Deployment and a status, lets it
settle, then counts the API server's own ``apiserver_request_total`` over a window of whole poll cycles and reads
the operator's RSS. ``--python`` runs another checkout's operator (e.g. main's .venv) for a before/after figure;
``--shared-secret`` gives every TaskQueue the same Secret (one Secret watch instead of N).

    .venv/bin/python -m bench.operator_scale --task-queues 200 --window 60
    .venv/bin/python -m bench.operator_scale --python /path/to/main/.venv/bin/python
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from tests.support.k8s import ControlPlane
from tests.support.servers import RedisServer, free_port

REPO = Path(__file__).resolve().parents[1]
CRD = REPO / "deploy" / "crds" / "taskqueue.yaml"
#: The CRD's default pollIntervalSeconds.
POLL_S = 5
#: Seconds after the last TaskQueue got a status before counting (the first polls create Deployments and statuses).
SETTLE_S = 35
#: The resources the operator touches; the API server's own traffic (its leases, endpoints) is left out.
OPERATOR_RESOURCES = ("secrets", "deployments", "taskqueues", "events")
_SAMPLE = re.compile(r'^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$')
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def manifests(namespace: str, count: int, redis_url: str, *, shared_secret: bool) -> str:
    """N TaskQueues with a Secret each (``shared_secret``: one Secret for all)."""
    docs: list[dict[str, Any]] = []
    for i in range(count):
        name = f"q{i:03d}"
        secret = "broker" if shared_secret else f"{name}-broker"
        if i == 0 or not shared_secret:
            docs.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret, "namespace": namespace},
                         "stringData": {"url": redis_url}})
        docs.append({
            "apiVersion": "taskfleet.io/v1alpha1", "kind": "TaskQueue",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"queues": [name],
                     "broker": {"urlFrom": {"secretKeyRef": {"name": secret, "key": "url"}}},
                     "worker": {"image": "ghcr.io/taskfleet/worker:bench", "app": "bench.apps:app"},
                     "autoscaling": {"minReplicas": 0, "pollIntervalSeconds": POLL_S}},
        })
    return yaml.safe_dump_all(docs)


def request_counts(kube: ControlPlane) -> Counter[tuple[str, str, str]]:
    """apiserver_request_total by (verb, resource, subresource), summed over codes and scopes."""
    text = kube.kubectl("get", "--raw", "/metrics").stdout
    counts: Counter[tuple[str, str, str]] = Counter()
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match:
            labels = dict(_LABEL.findall(match["labels"]))
            key = (labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""))
            counts[key] += int(float(match["value"]))
    return counts


def open_watches(kube: ControlPlane) -> dict[str, int]:
    """Watches open now, by resource (apiserver_longrunning_requests)."""
    text = kube.kubectl("get", "--raw", "/metrics").stdout
    found: Counter[str] = Counter()
    for line in text.splitlines():
        if line.startswith("apiserver_longrunning_requests{") and 'verb="WATCH"' in line:
            labels = dict(_LABEL.findall(line[line.index("{") + 1:line.index("}")]))
            found[labels.get("resource", "")] += int(float(line.rsplit(" ", 1)[1]))
    return {r: n for r, n in found.items() if r in OPERATOR_RESOURCES and n}


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM in KiB, and Threads, from /proc."""
    values: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            values[key] = int(rest.split()[0])
    return values


def all_polled(kube: ControlPlane, namespace: str, count: int) -> bool:
    items = json.loads(kube.kubectl("get", "taskqueues", "-n", namespace, "-o", "json").stdout)["items"]
    polled = sum(1 for tq in items if (tq.get("status") or {}).get("lastPollTime"))
    deployments = json.loads(kube.kubectl("get", "deployments", "-n", namespace, "-o", "json").stdout)["items"]
    return polled == count and len(deployments) == count


def measure(python: str, count: int, window_s: float, *, shared_secret: bool = False) -> dict[str, Any]:
    kube = ControlPlane().start()
    redis = RedisServer()
    redis.start()
    log = Path(tempfile.mkstemp(prefix="taskfleet-operator-bench-", suffix=".log")[1])
    operator: subprocess.Popen[bytes] | None = None
    try:
        kube.apply_crd(CRD)
        namespace = kube.create_namespace("scale")
        kube.kubectl("apply", "-f", "-", input=manifests(namespace, count, f"{redis.url}/0",
                                                                shared_secret=shared_secret))
        with log.open("wb") as out:
            operator = subprocess.Popen(
                [python, "-m", "taskfleet", "operator", "--all-namespaces", "--host", "127.0.0.1",
                 "--liveness-port", str(free_port()), "--metrics-port", str(free_port()), "-l", "warning",
                 "--log-format", "json"],
                stdout=out, stderr=subprocess.STDOUT, env={**kube.env(), "PYTHONUNBUFFERED": "1"}, cwd=REPO)
        started = time.monotonic()
        while not all_polled(kube, namespace, count):
            if operator.poll() is not None or time.monotonic() - started > 300:
                raise RuntimeError(f"the operator did not poll every TaskQueue:\n{log.read_text()[-3000:]}")
            time.sleep(2)
        ready_s = time.monotonic() - started
        time.sleep(SETTLE_S)
        before = request_counts(kube)
        time.sleep(window_s)
        after = request_counts(kube)
        memory = proc_status(operator.pid)
        watches = open_watches(kube)
    finally:
        if operator is not None:
            operator.terminate()
            try:
                operator.wait(30)
            except subprocess.TimeoutExpired:
                operator.kill()
                operator.wait()
        redis.close()
        kube.close()
    cycles = window_s / POLL_S
    delta = {k: n - before.get(k, 0) for k, n in after.items()
             if k[1] in OPERATOR_RESOURCES and n > before.get(k, 0)}
    by_call = {" ".join(p for p in (verb, resource + (f"/{sub}" if sub else "")) if p): round(n / cycles, 1)
               for (verb, resource, sub), n in sorted(delta.items())}
    return {
        "task_queues": count, "secrets": 1 if shared_secret else count, "poll_interval_s": POLL_S,
        "window_s": window_s, "python": python,
        "seconds_until_all_polled": round(ready_s, 1),
        "requests_per_poll_cycle": round(sum(delta.values()) / cycles, 1),
        "requests_per_poll_cycle_by_call": by_call,
        "open_watches": watches,
        "rss_mib": round(memory["VmRSS"] / 1024, 1), "peak_rss_mib": round(memory["VmHWM"] / 1024, 1),
        "threads": memory["Threads"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task-queues", type=int, default=200, help="how many TaskQueues (each with a Secret)")
    parser.add_argument("--window", type=float, default=60.0, help="seconds of steady state to count (whole polls)")
    parser.add_argument("--python", default=sys.executable, help="interpreter whose taskfleet operator to run")
    parser.add_argument("--shared-secret", action="store_true", help="one broker Secret for every TaskQueue")
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.python, args.task_queues, args.window, shared_secret=args.shared_secret),
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
