"""The benchmark's own virtualenv, ``.bench-venv/``: the peers (Celery, Dramatiq) and matplotlib, kept out of .venv.

Versions are pinned so two runs months apart compare the same peers; a stamp file records what was installed, and
the venv is rebuilt only when ``REQUIREMENTS`` changes. The peers' workers and producers run on this interpreter;
Taskfleet runs on .bench-taskfleet-venv (bench/taskfleet_env.py). All are the same CPython (each venv is made from
.venv's base interpreter).
"""

from __future__ import annotations

import json
import subprocess
import sys
import venv
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH_VENV = ROOT / ".bench-venv"
#: What the peers run on; bump deliberately and note it in docs/benchmarks.md.
REQUIREMENTS = (
    "celery[redis]==5.7.0",
    "kombu==5.7.0",
    "dramatiq[redis,rabbitmq]==2.2.1",
    "pika==1.4.4",
    "redis==8.1.0",
    "matplotlib==3.11.2",
)
PIP_TIMEOUT_S = 900.0
#: The file in a venv recording what was installed into it.
_STAMP_NAME = ".bench-requirements"


def bench_python() -> Path:
    """The bench venv's interpreter (it may not exist yet: see ``ensure_bench_venv``)."""
    return BENCH_VENV / "bin" / "python"


def ensure_bench_venv(*, log: bool = True) -> Path:
    """Create ``.bench-venv`` and install ``REQUIREMENTS`` unless the stamp says they are there; return its python.

    Raises ``RuntimeError`` with pip's output when the install fails (no index access, say).
    """
    return ensure_venv(BENCH_VENV, list(REQUIREMENTS), wanted="\n".join(REQUIREMENTS) + "\n",
                       what=", ".join(REQUIREMENTS) if log else None)


def ensure_venv(path: Path, pip_args: Sequence[str], *, wanted: str, what: str | None) -> Path:
    """Create the venv at ``path`` (from the running interpreter's base) and ``pip install`` ``pip_args`` into it
    from the checkout's root, unless its stamp file already holds ``wanted``; then write the stamp. Prints a line
    naming ``what`` is installed (None: silent). Returns the venv's python.

    Raises ``RuntimeError`` with pip's output when the install fails (no index access, say).
    """
    python, stamp = path / "bin" / "python", path / _STAMP_NAME
    if python.exists() and stamp.exists() and stamp.read_text() == wanted:
        return python
    if what is not None:
        print(f"installing {what} into {path.relative_to(ROOT)} ...", flush=True)
    if not python.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(path)
    result = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *pip_args],
        cwd=ROOT, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"pip install into {path} failed:\n{result.stdout[-2000:]}{result.stderr[-4000:]}")
    stamp.write_text(wanted)
    return python


def installed_versions(python: Path, names: Sequence[str] | None = None) -> dict[str, str]:
    """``{distribution: version}`` of ``names`` (default: the pinned packages) as installed in ``python``'s
    environment."""
    names = list(names) if names is not None else [r.split("[")[0].split("==")[0] for r in REQUIREMENTS]
    code = (
        "import json, sys\nfrom importlib.metadata import version\n"
        "print(json.dumps({n: version(n) for n in sys.argv[1:]}))"
    )
    out = subprocess.run([str(python), "-c", code, *names], capture_output=True, text=True, check=True)
    versions: dict[str, str] = json.loads(out.stdout)
    return versions


if __name__ == "__main__":
    print(ensure_bench_venv())
    print(installed_versions(bench_python()))
    sys.exit(0)
