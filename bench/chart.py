"""Bar chart of a benchmark report: ``python bench/run.py -m bench.chart RESULTS.json OUT.png`` on .bench-venv
(matplotlib lives there, not in .venv). One row of panels per broker: throughput (log scale), round-trip latency,
idle memory; one bar per system."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench.report import BROKER_TITLES, METRICS, SYSTEMS

GROUPS = (("throughput", "tasks/s (log scale)"), ("latency", "ms"), ("memory", "MiB"))
COLOURS = {"taskfleet": "#1f77b4", "celery": "#2ca02c", "dramatiq": "#ff7f0e"}


def draw(report: dict[str, Any], out: Path) -> None:
    brokers = list(report["results"])
    fig, axes = plt.subplots(len(brokers), len(GROUPS), figsize=(17, 4.2 * len(brokers)), squeeze=False)
    for row, broker in enumerate(brokers):
        by_system = {s: r for s, r in report["results"][broker].items() if "error" not in r}
        systems = [s for s in SYSTEMS if s in by_system]
        for col, (group, unit) in enumerate(GROUPS):
            ax = axes[row][col]
            metrics = [m for m in METRICS if m.group == group]
            width = 0.8 / max(len(systems), 1)
            for i, system in enumerate(systems):
                values = [m.value(by_system[system]) or 0.0 for m in metrics]
                xs = [x + (i - (len(systems) - 1) / 2) * width for x in range(len(metrics))]
                bars = ax.bar(xs, values, width, label=system, color=COLOURS.get(system))
                ax.bar_label(bars, labels=[m.format(v) for m, v in zip(metrics, values, strict=True)],
                             fontsize=7, rotation=90, padding=2)
            ax.set_xticks(range(len(metrics)), [m.label for m in metrics], rotation=20, ha="right", fontsize=8)
            ax.set_ylabel(unit)
            if group == "throughput":
                ax.set_yscale("log")
            ax.margins(y=0.25)
            ax.set_title(f"{BROKER_TITLES.get(broker, broker)}: {group}", fontsize=10)
            if col == 0:
                ax.legend(fontsize=8)
    meta = report["meta"]
    fig.suptitle(f"Taskfleet vs peers, {meta['timestamp']}, {meta['tasks']:,} tasks per drain, "
                 f"2 worker processes, {meta['host']['cores']} cores", fontsize=12)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> None:
    report_path, out = Path(sys.argv[1]), Path(sys.argv[2])
    draw(json.loads(report_path.read_text()), out)


if __name__ == "__main__":
    main()
