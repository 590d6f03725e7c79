"""Launcher: ``python bench/run.py [ARGS]`` runs the benchmark (``bench/__main__.py``, ``--help`` for ARGS);
``python bench/run.py -m bench.celery_runner [ARGS]`` runs one runner module (how the orchestrator starts them,
on .venv or .bench-venv). It puts the repository root (for ``bench``) and bench/apps (the benchmark apps) on
sys.path, wherever it is started from.
"""

import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    sys.path.append(str(ROOT))
    sys.path.append(str(ROOT / "bench" / "apps"))
    module = "bench"
    if len(sys.argv) > 2 and sys.argv[1] == "-m":
        module = sys.argv[2]
        del sys.argv[1:3]
    sys.argv[0] = module
    runpy.run_module(module, run_name="__main__", alter_sys=True)
