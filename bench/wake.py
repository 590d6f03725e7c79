"""Wake-up from zero on Redis, and what the wake notice costs ``delay()``: ``make bench-wake`` or

    .venv/bin/python bench/run.py -m bench.wake [--tries 9] [--baseline-tries 5] [--tasks 20000] [--block 1000]
                                                [--only all|rate|wake]

1. ``delay()`` rate, before and after, in the same run: the benchmark's ``enqueue_delay`` scenario (no-result
   no-ops sent one by one with ``delay()``, ``bench/apps/taskfleet_app.py``) on a private Redis, ``--tasks`` calls
   with each enqueue script, as it was before wake notices ("before": ``enqueue.lua`` without its PUBLISH) and as
   it is ("after"), in blocks of ``--block`` calls alternating ABBA (a shared machine's load drifts over both
   alike); the rates over all blocks are compared. Also the
   server's own time per enqueue call (``INFO commandstats``, microseconds per EVALSHA) before, after, and in the
   worst case: every call makes an empty queue non-empty and the operator follows the queue, so every call
   publishes to a subscriber.
2. Wake-up from zero: a kube-apiserver (envtest, no kubelet), the real operator process (``taskfleet operator``)
   and the Redis. Per try, a fresh TaskQueue at zero replicas polled every 30 s; once the operator follows its
   queue and a random pause (anywhere in the poll cycle), one ``delay()``; the time until the Deployment asks for
   a replica (read every 10 ms through the API).
   The baseline: the same with the default 5 s poll and the "before" script (no notice), i.e. today's behaviour.

Prints a summary and writes it to bench/results/wake-<timestamp>.json.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
import taskfleet_app
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config

from taskfleet._connections.redis import EvalSha
from taskfleet.brokers.redis import RedisBroker
from taskfleet.brokers.redis._keys import QueueKeys
from taskfleet.brokers.redis._scripts import script_source
from tests.support.k8s import ControlPlane
from tests.support.operator import CRD, OperatorProcess, apply, create_broker_secret, task_queue
from tests.support.servers import RedisServer
from tests.support.waiting import wait_for

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
QUEUE = taskfleet_app.QUEUE
#: The wake-up tries' poll interval: a scale-up within seconds can only come from the notice.
LONG_POLL_S = 30
#: The baseline's poll interval: the CRD's default.
DEFAULT_POLL_S = 5
#: How often the Deployment's replicas are read while waiting for the scale-up.
WATCH_EVERY_S = 0.01
#: Calls per worst-case enqueue measurement.
WORST_CASE_CALLS = 2000


def before_script() -> str:
    """``enqueue.lua`` as it was before wake notices: the same wake-up tokens, no PUBLISH."""
    source = script_source("enqueue")
    now = "if ready > 0 and signal(KEYS[8], ready) then\n  redis.call('PUBLISH', wake_channel(ARGV[1]), ARGV[1])\nend"
    if now not in source:
        raise RuntimeError("enqueue.lua changed: update bench/wake.py's before_script")
    return source.replace(now, "if ready > 0 then\n  signal(KEYS[8], ready)\nend")


def use_script(broker: RedisBroker, source: str) -> None:
    """Have ``broker`` enqueue with ``source`` (its packed prefixes rebuilt)."""
    broker._enqueue = EvalSha(source)  # the benchmark swaps the script on purpose
    broker._enqueue_prefixes.clear()


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {"median": round(statistics.median(ordered), 3), "p95": round(p95, 3), "min": round(ordered[0], 3),
            "max": round(ordered[-1], 3), "n": len(ordered)}


# -- 1. delay() rate and server time --------------------------------------------------------------------------------


def delay_rates(url: str, *, tasks: int, block: int, log: Callable[[str], None]) -> dict[str, Any]:
    """``tasks`` ``delay()`` calls per script, in blocks of ``block`` alternating before/after (ABBA order), so a
    shared machine's load drifts over both alike."""
    taskfleet_app.app.configure(broker=url, result_backend=url)
    broker = taskfleet_app.app.broker
    assert isinstance(broker, RedisBroker)
    scripts = {"before": before_script(), "after": script_source("enqueue")}
    variants = {name: (EvalSha(source), {}) for name, source in scripts.items()}
    seconds: dict[str, list[float]] = {name: [] for name in scripts}
    broker.purge(QUEUE)
    for pair in range(max(1, tasks // block)):
        for name in (("before", "after") if pair % 2 == 0 else ("after", "before")):
            broker._enqueue, broker._enqueue_prefixes = variants[name]  # type: ignore[assignment]
            taskfleet_app.noop.delay()  # the script loaded, the prefix packed
            started = time.perf_counter()
            for _ in range(block):
                taskfleet_app.noop.delay()
            seconds[name].append(time.perf_counter() - started)
        if pair % 5 == 4:
            log(f"{(pair + 1) * block} per script: " + ", ".join(
                f"{name} {len(v) * block / sum(v):,.0f}/s" for name, v in seconds.items()))
            broker.purge(QUEUE)
    broker.purge(QUEUE)
    overall = {name: round(len(v) * block / sum(v)) for name, v in seconds.items()}
    block_medians = {name: round(statistics.median(block / x for x in v)) for name, v in seconds.items()}
    return {"tasks_per_script": len(seconds["after"]) * block, "block": block, "per_s": overall,
            "block_median_per_s": block_medians, "after_over_before": round(overall["after"] / overall["before"], 3),
            "block_rates": {name: [round(block / x) for x in v] for name, v in seconds.items()},
            "server_us_per_enqueue": server_time(url, broker, scripts)}


def server_time(url: str, broker: RedisBroker, scripts: dict[str, str]) -> dict[str, float]:
    """Microseconds of server time per enqueue call: each script into a queue with messages waiting, and the worst
    case (every call into an empty, followed queue, so every call publishes to a subscriber)."""
    stats = redis.Redis.from_url(url)
    follower = stats.pubsub()
    out: dict[str, float] = {}
    try:
        for name, source in [*scripts.items(), ("after_every_call_publishes", scripts["after"])]:
            use_script(broker, source)
            worst = name == "after_every_call_publishes"
            queue = f"server-time-{name}"
            keys = QueueKeys.of(queue)
            if worst:
                follower.subscribe(keys.wake_channel)
            broker.enqueue(queue, "warm", b"x")
            stats.config_resetstat()
            for i in range(WORST_CASE_CALLS):
                broker.enqueue(queue, f"m{i}", b"x")
                if worst:
                    stats.delete(keys.signal)  # as a consumer that found the queue empty (DEL is not counted)
            cmd = stats.info("commandstats").get("cmdstat_evalsha", {})
            out[name] = round(float(cmd.get("usec_per_call", 0.0)), 2)
            broker.purge(queue)
        return out
    finally:
        follower.close()
        stats.close()


# -- 2. wake-up from zero --------------------------------------------------------------------------------------------


@contextmanager
def control_plane() -> Iterator[ControlPlane]:
    kube = ControlPlane().start()
    try:
        kube.apply_crd(CRD)
        yield kube
    finally:
        kube.close()


def deployment_replicas(apps: k8s_client.AppsV1Api, namespace: str, name: str) -> int | None:
    try:
        return int(apps.read_namespaced_deployment(name, namespace).spec.replicas or 0)
    except k8s_client.ApiException as exc:
        if exc.status == 404:
            return None
        raise


def one_try(kube: ControlPlane, apps: k8s_client.AppsV1Api, url: str, stats: redis.Redis, *, name: str,
            poll_s: int, baseline: bool, pause: random.Random) -> float:
    """Seconds from one ``delay()`` into an idle queue at zero replicas to the Deployment asking for a replica."""
    namespace = kube.create_namespace("wake")
    create_broker_secret(kube, namespace, url)
    queue = f"{name}-q"
    apply(kube, namespace, task_queue(name, queues=[queue], autoscaling={"minReplicas": 0,
                                                                            "pollIntervalSeconds": poll_s}))
    deployment = f"{name}-worker"
    wait_for(lambda: deployment_replicas(apps, namespace, deployment) == 0, 30, interval=0.1,
             message=f"{deployment} never appeared at zero replicas")
    channel = QueueKeys.of(queue).wake_channel
    wait_for(lambda: dict(stats.pubsub_numsub(channel)).get(channel.encode(), 0) >= 1, 15, interval=0.05,
             message="the operator never followed the queue")
    time.sleep(1.5)  # past the one poll the subscription's confirmation asks for, and its coalescing gap
    time.sleep(pause.uniform(0, poll_s if baseline else 1.0))  # anywhere in the poll cycle
    sent = time.perf_counter()
    taskfleet_app.noop.apply_async(queue=queue)
    while deployment_replicas(apps, namespace, deployment) == 0:
        if time.perf_counter() - sent > 2 * poll_s + 10:
            raise RuntimeError(f"{deployment} was never scaled up")
        time.sleep(WATCH_EVERY_S)
    return time.perf_counter() - sent


def wake_times(url: str, *, tries: int, baseline_tries: int, log: Callable[[str], None]) -> dict[str, Any]:
    taskfleet_app.app.configure(broker=url, result_backend=url)
    broker = taskfleet_app.app.broker
    assert isinstance(broker, RedisBroker)
    stats = redis.Redis.from_url(url)
    with control_plane() as kube:
        k8s_config.load_kube_config(config_file=str(kube.kubeconfig))
        apps = k8s_client.AppsV1Api()
        operator = OperatorProcess(kube).wait_ready()
        try:
            results: dict[str, list[float]] = {"notice_poll_30s": [], "baseline_poll_5s": []}
            pause = random.Random(19)
            use_script(broker, script_source("enqueue"))
            for i in range(tries):
                results["notice_poll_30s"].append(one_try(kube, apps, url, stats, name=f"wake{i}", poll_s=LONG_POLL_S,
                                                              baseline=False, pause=pause))
                log(f"wake try {i + 1}: {results['notice_poll_30s'][-1]:.3f} s")
            use_script(broker, before_script())
            for i in range(baseline_tries):
                results["baseline_poll_5s"].append(
                    one_try(kube, apps, url, stats, name=f"base{i}", poll_s=DEFAULT_POLL_S, baseline=True,
                            pause=pause))
                log(f"baseline try {i + 1}: {results['baseline_poll_5s'][-1]:.3f} s")
        finally:
            operator.stop()
            stats.close()
    return {name: {"seconds": [round(v, 3) for v in values], **summary(values)}
            for name, values in results.items() if values}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.wake", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tries", type=int, default=9, help="wake-up tries with the notice (30 s poll)")
    parser.add_argument("--baseline-tries", type=int, default=5, help="tries without the notice (5 s poll)")
    parser.add_argument("--tasks", type=int, default=20_000, help="delay() calls per script")
    parser.add_argument("--block", type=int, default=1000, help="delay() calls per block (alternating scripts)")
    parser.add_argument("--only", choices=("all", "rate", "wake"), default="all", help="run one part only")
    args = parser.parse_args(argv)

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    out: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds")}
    with RedisServer() as server:
        url = f"{server.url}/0"
        if args.only in ("all", "rate"):
            out["delay_rate"] = delay_rates(url, tasks=args.tasks, block=args.block, log=log)
        if args.only in ("all", "wake"):
            out["wake_up"] = wake_times(url, tries=args.tries, baseline_tries=args.baseline_tries, log=log)
        taskfleet_app.app.close()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"wake-{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(out, indent=2))
    print(f"written to {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
