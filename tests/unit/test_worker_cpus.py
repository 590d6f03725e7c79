"""Specification of the default worker concurrency: the CPUs the process may use (``taskfleet.worker.cpus``), read
from fake ``/proc`` and ``/sys/fs/cgroup`` trees."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from taskfleet.worker import cpus
from taskfleet.worker.cpus import cgroup_cpu_limit, cpus_allowed, usable_cpus
from taskfleet.worker.settings import WorkerSettings
from taskfleet.worker.worker_command import add_parser


def _tree(root: Path, files: dict[str, str]) -> Path:
    """A fake filesystem under ``root``: each path (relative to /) with its content."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


V2_IN_CONTAINER = "0::/\n"
V2_ON_HOST = "0::/kubepods.slice/pod-a.slice/cri-b.scope\n"
V1 = "12:pids:/\n4:cpu,cpuacct:/kubepods/burstable/pod-a/c1\n3:memory:/kubepods/burstable/pod-a/c1\n"


@pytest.mark.parametrize(
    ("files", "limit"),
    [
        pytest.param({}, None, id="no /proc (not Linux)"),
        pytest.param({"proc/self/cgroup": V2_IN_CONTAINER, "sys/fs/cgroup/cpu.max": "max 100000\n"}, None,
                     id="v2 unlimited"),
        pytest.param({"proc/self/cgroup": V2_IN_CONTAINER, "sys/fs/cgroup/cpu.max": "200000 100000\n"}, 2.0,
                     id="v2 limit 2 CPUs"),
        pytest.param({"proc/self/cgroup": V2_IN_CONTAINER, "sys/fs/cgroup/cpu.max": "150000 100000\n"}, 1.5,
                     id="v2 limit 1.5 CPUs"),
        pytest.param({"proc/self/cgroup": V2_IN_CONTAINER, "sys/fs/cgroup/cpu.max": "50000 100000\n"}, 0.5,
                     id="v2 limit 500m"),
        pytest.param({"proc/self/cgroup": V2_IN_CONTAINER, "sys/fs/cgroup/cpu.max": "nonsense\n"}, None,
                     id="v2 unreadable content is no limit"),
        pytest.param({"proc/self/cgroup": V2_IN_CONTAINER, "sys/fs/cgroup/cpu.max": "100000 0\n"}, None,
                     id="v2 zero period is no limit"),
        pytest.param({"proc/self/cgroup": V2_ON_HOST,
                      "sys/fs/cgroup/cpu.max": "max 100000\n",
                      "sys/fs/cgroup/kubepods.slice/cpu.max": "max 100000\n",
                      "sys/fs/cgroup/kubepods.slice/pod-a.slice/cpu.max": "400000 100000\n",
                      "sys/fs/cgroup/kubepods.slice/pod-a.slice/cri-b.scope/cpu.max": "300000 100000\n"}, 3.0,
                     id="v2 without a cgroup namespace: the process's own cgroup"),
        pytest.param({"proc/self/cgroup": V2_ON_HOST,
                      "sys/fs/cgroup/kubepods.slice/pod-a.slice/cpu.max": "100000 100000\n",
                      "sys/fs/cgroup/kubepods.slice/pod-a.slice/cri-b.scope/cpu.max": "max 100000\n"}, 1.0,
                     id="v2 an ancestor's lower limit wins"),
        pytest.param({"proc/self/cgroup": V1,
                      "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
                      "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, None,
                     id="v1 unlimited (-1)"),
        pytest.param({"proc/self/cgroup": V1,
                      "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "200000\n",
                      "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, 2.0,
                     id="v1 in a container: the mount is the container's cgroup"),
        pytest.param({"proc/self/cgroup": V1,
                      "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "250000\n",
                      "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n"}, 2.5,
                     id="v1 mounted as cpu"),
        pytest.param({"proc/self/cgroup": V1,
                      "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
                      "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_period_us": "100000\n",
                      "sys/fs/cgroup/cpu,cpuacct/kubepods/burstable/pod-a/c1/cpu.cfs_quota_us": "50000\n",
                      "sys/fs/cgroup/cpu,cpuacct/kubepods/burstable/pod-a/c1/cpu.cfs_period_us": "100000\n"}, 0.5,
                     id="v1 on the host: the process's own cgroup"),
        pytest.param({"proc/self/cgroup": V1, "sys/fs/cgroup/cpu,cpuacct/cpu.cfs_quota_us": "200000\n"}, None,
                     id="v1 without a period is no limit"),
        pytest.param({"proc/self/cgroup": "0::/\n1:cpu:/\n",
                      "sys/fs/cgroup/cpu/cpu.cfs_quota_us": "300000\n",
                      "sys/fs/cgroup/cpu/cpu.cfs_period_us": "100000\n"}, 3.0,
                     id="hybrid: v1 cpu controller beside an empty v2 tree"),
    ],
)
def test_the_cgroup_cpu_limit_is_read_from_the_process_cgroups(
        tmp_path: Path, files: dict[str, str], limit: float | None) -> None:
    assert cgroup_cpu_limit(_tree(tmp_path, files)) == limit


@pytest.mark.parametrize(
    ("available", "limit", "allowed"),
    [
        pytest.param(64, None, 64, id="no limit: every available CPU"),
        pytest.param(64, 2.0, 2, id="a pod limited to 2 CPUs on a 64-CPU node"),
        pytest.param(64, 1.5, 2, id="a fractional limit is rounded up"),
        pytest.param(64, 0.1, 1, id="a limit below one CPU still allows one child"),
        pytest.param(4, 8.0, 4, id="affinity below the limit wins"),
        pytest.param(0, None, 1, id="never below one"),
    ],
)
def test_the_cpus_allowed_are_the_available_ones_capped_by_the_limit_rounded_up(
        available: int, limit: float | None, allowed: int) -> None:
    assert cpus_allowed(available, limit) == allowed


def test_usable_cpus_combines_affinity_and_the_cgroup_limit(tmp_path: Path) -> None:
    # Given a container limited to 2 CPUs on a 64-CPU node
    root = _tree(tmp_path, {"proc/self/cgroup": V2_IN_CONTAINER, "sys/fs/cgroup/cpu.max": "200000 100000\n"})

    # Then 2 children by default
    assert usable_cpus(root=root, available=64) == 2


def test_usable_cpus_counts_the_cpus_the_process_may_run_on_when_nothing_limits_it(tmp_path: Path) -> None:
    assert usable_cpus(root=tmp_path) == cpus.available_cpus() >= 1


def test_the_default_concurrency_of_the_worker_settings_and_flag_is_the_usable_cpus(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpus, "available_cpus", lambda: 3)
    monkeypatch.setattr(cpus, "cgroup_cpu_limit", lambda root=None: 1.2)
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(), "worker", "")

    assert WorkerSettings(queues=("default",)).concurrency == 2
    assert parser.parse_args(["worker", "-A", "m:app"]).concurrency == 2
