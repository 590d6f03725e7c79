"""The benchmark report: the JSON file, the console table with Taskfleet/peer ratios, its Markdown twin for
docs/benchmarks.md, and the PNG bar chart (drawn by bench/chart.py on .bench-venv, which has matplotlib).

Standard library only: bench/chart.py imports ``METRICS`` from here on .bench-venv.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SYSTEMS = ("taskfleet", "celery", "dramatiq")
PEERS = ("celery", "dramatiq")
BROKER_TITLES = {"redis": "Redis", "rabbitmq": "RabbitMQ", "sqlite": "SQLite (embedded)"}
CHART_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Metric:
    """One row of the table: ``path`` into a system's results (dotted), its label, unit and direction."""

    path: str
    label: str
    unit: str
    higher_is_better: bool
    group: str  # "throughput", "latency" or "memory": one chart panel each

    def value(self, result: dict[str, Any]) -> float | None:
        node: Any = result
        for part in self.path.split("."):
            if not isinstance(node, dict) or part not in node:
                return None
            node = node[part]
        return float(node) if isinstance(node, int | float) else None

    def heading(self) -> str:
        return f"{self.label} ({self.unit}, {'higher' if self.higher_is_better else 'lower'} is better)"

    def format(self, value: float | None) -> str:
        if value is None:
            return "-"
        if self.unit == "/s":
            return f"{value:,.0f}"
        if self.unit in ("ms", "s"):
            return f"{value:.2f}"
        return f"{value:.1f}"


METRICS = (
    Metric("enqueue_delay_per_s", "enqueue, delay() one by one", "/s", True, "throughput"),
    Metric("enqueue_batch_per_s", "enqueue, batch API", "/s", True, "throughput"),
    Metric("drain_noop.per_s", "drain, no-op", "/s", True, "throughput"),
    Metric("drain_1kb.per_s", "drain, 1 KiB payload", "/s", True, "throughput"),
    Metric("drain_results.per_s", "drain, results stored", "/s", True, "throughput"),
    Metric("rtt.p50_ms", "round trip p50", "ms", False, "latency"),
    Metric("rtt.p95_ms", "round trip p95", "ms", False, "latency"),
    Metric("rtt.p99_ms", "round trip p99", "ms", False, "latency"),
    Metric("events_cost.off_per_s", "drain, no-op, events off (events scenario)", "/s", True, "throughput"),
    Metric("events_cost.on_per_s", "drain, no-op, events on (-E)", "/s", True, "throughput"),
    Metric("async_io.per_s", "async I/O, 2,000 tasks x 100 ms (async scenario)", "/s", True, "throughput"),
    Metric("chord_1000.seconds", "chord of 1,000 no-ops, apply to body result", "s", False, "latency"),
    Metric("chain_100.seconds", "chain of 100 tasks, apply to last result", "s", False, "latency"),
    Metric("idle_memory.rss_mb", "idle worker RSS, whole tree", "MiB", False, "memory"),
    Metric("idle_memory.pss_mb", "idle worker PSS, whole tree", "MiB", False, "memory"),
    Metric("idle_memory.cgroup_anon_mb", "idle worker container RSS (its cgroup's anon)", "MiB", False, "memory"),
)


def ratio(ours: float | None, theirs: float | None) -> str:
    """``ours / theirs`` as ``1.23x`` (``-`` when either is missing or the peer's is 0)."""
    if ours is None or not theirs:
        return "-"
    return f"{ours / theirs:.2f}x"


def _table_rows(by_system: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    systems = [s for s in SYSTEMS if s in by_system]
    peers = [p for p in PEERS if p in by_system and "taskfleet" in by_system]
    header = ["", *systems, *(f"Taskfleet/{p.capitalize()}" for p in peers)]
    rows = []
    for metric in METRICS:
        values = {s: metric.value(by_system[s]) for s in systems}
        rows.append([metric.heading(), *(metric.format(values[s]) for s in systems),
                     *(ratio(values["taskfleet"], values[p]) for p in peers)])
    return header, rows


def _errors(by_system: dict[str, dict[str, Any]]) -> list[str]:
    return [f"{system} failed: {result['error']}" for system, result in by_system.items() if "error" in result]


def text_table(report: dict[str, Any]) -> str:
    """The console table: one block per broker, aligned columns, then the footnotes."""
    lines = []
    for broker, by_system in report["results"].items():
        header, rows = _table_rows(by_system)
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        lines.append(f"== {BROKER_TITLES.get(broker, broker)} ==")
        for row in [header, *rows]:
            lines.append("  ".join(c.ljust(widths[0]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)))
        lines.extend(f"  ! {e}" for e in _errors(by_system))
        lines.append("")
    lines.extend(footnotes(report))
    return "\n".join(lines)


def markdown(report: dict[str, Any]) -> str:
    """The same tables in Markdown, for the "Latest results" section of docs/benchmarks.md."""
    meta = report["meta"]
    lines = [
        f"Run {meta['timestamp']} on {meta['host']['cpu']} ({meta['host']['cores']} cores), "
        f"{meta['tasks']:,} tasks per drain, {meta['rtt_count']} round trips, taskfleet {meta['taskfleet_commit']}. "
        "Ratios are Taskfleet/peer: above 1x is better for throughput, below 1x for latency and memory.",
        "",
    ]
    for broker, by_system in report["results"].items():
        header, rows = _table_rows(by_system)
        lines += [f"### {BROKER_TITLES.get(broker, broker)}", "",
                  "| " + " | ".join(header) + " |", "|" + "|".join(["---", *["---:"] * (len(header) - 1)]) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines += [f"\n{e}" for e in _errors(by_system)]
        lines.append("")
    lines += [f"- {note}" for note in footnotes(report)]
    return "\n".join(lines)


def footnotes(report: dict[str, Any]) -> list[str]:
    """One line per system with the settings it ran with (from its RabbitMQ run when there is one, where the
    publisher-confirm setting applies), plus how the run was made."""
    notes = []
    for system in SYSTEMS:
        found = [r[system] for b, r in sorted(report["results"].items(), key=lambda kv: kv[0] != "rabbitmq")
                 if system in r and "settings" in r[system]]
        if found:
            settings = ", ".join(f"{k}={_short(v)}" for k, v in found[0]["settings"].items() if v is not None)
            notes.append(f"{system}: {settings}")
    meta = report["meta"]
    notes.append("versions: " + ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items()))
    if venv_name := meta.get("taskfleet_venv"):
        what = ("taskfleet[redis,rabbitmq] only, as users install it" if venv_name == ".bench-taskfleet-venv"
                else "the development venv, with every dev tool")
        notes.append(f"taskfleet ran from {venv_name} ({what})")
    notes.append("drain = tasks / time from the first message taken to an empty queue (worker start-up excluded; "
                 "on RabbitMQ 'empty' means no ready message, with at most the prefetch window still running)")
    for broker, by_system in report["results"].items():
        cost = by_system.get("taskfleet", {}).get("events_cost")
        if cost and cost.get("on_over_off") is not None:
            verdict = "meets" if cost["on_over_off"] >= cost["floor"] else "BELOW"
            notes.append(f"task events on {BROKER_TITLES.get(broker, broker)}: drain with -E is "
                         f"{cost['on_over_off']:.0%} of drain without (medians of {len(cost['rounds'])} rounds each; "
                         f"{verdict} the {cost['floor']:.0%} floor); worker CPU "
                         f"{cost.get('worker_cpu_s_off')} s without, {cost.get('worker_cpu_s_on')} s with")
    notes.extend(_async_notes(report))
    return notes


#: What the issue asks of the async scenario (bench/async_io.py): Taskfleet at least this multiple of the best peer.
ASYNC_TARGET_OVER_BEST_PEER = 10.0


def _async_notes(report: dict[str, Any]) -> list[str]:
    """Per broker: the async scenario's verdict (Taskfleet against the best peer), and any failure of it."""
    notes = []
    for broker, by_system in report["results"].items():
        title = BROKER_TITLES.get(broker, broker)
        runs = {s: r["async_io"] for s, r in by_system.items() if isinstance(r.get("async_io"), dict)}
        notes.extend(f"async I/O on {title}: {s} failed: {r['error']}" for s, r in runs.items() if "error" in r)
        ours = runs.get("taskfleet", {}).get("per_s")
        peers = {s: r["per_s"] for s, r in runs.items() if s in PEERS and "per_s" in r}
        if ours is None or not peers:
            continue
        best = max(peers, key=lambda s: peers[s])
        times = ours / peers[best] if peers[best] else float("inf")
        verdict = "meets" if times >= ASYNC_TARGET_OVER_BEST_PEER else "BELOW"
        notes.append(f"async I/O on {title}: Taskfleet {ours:,.0f}/s is {times:.1f}x the best peer ({best}, "
                     f"{peers[best]:,.0f}/s); {verdict} the {ASYNC_TARGET_OVER_BEST_PEER:.0f}x target")
    if any("async_io" in r for by_system in report["results"].values() for r in by_system.values()):
        notes.append("async I/O = 2,000 tasks that each wait 100 ms (Taskfleet: async def + asyncio.sleep on -c 2, "
                     "default --async-concurrency; peers: time.sleep on their pools), tasks / time from the first "
                     "message taken to the 2,000th task finished (each task INCRs one Redis counter)")
    return notes


def _short(value: Any) -> str:
    return json.dumps(value) if isinstance(value, dict | list) else str(value)


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def write_png(json_path: Path, png_path: Path, python: Path) -> str | None:
    """Draw the bar chart with bench/chart.py on ``python`` (the bench venv's); returns an error text or None."""
    command = [str(python), str(ROOT / "bench" / "run.py"), "-m", "bench.chart", str(json_path), str(png_path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=CHART_TIMEOUT_S, check=False)
    return None if result.returncode == 0 else (result.stderr.strip()[-2000:] or f"exit {result.returncode}")
