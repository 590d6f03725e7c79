#!/usr/bin/env bash
# Builds build/lint-tree/taskfleet: the installed package layout (sdk/ -> taskfleet, worker/ -> taskfleet.worker,
# ...) as symlinks, so mypy and import-linter (which read packages from disk, not through setuptools' editable
# import hook) see the same module names as Python does. Rebuilt on every run; takes milliseconds.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=build/lint-tree
rm -rf "$tree"
mkdir -p "$tree"
cp -rs "$PWD/sdk" "$tree/taskfleet"
for sub in worker operator cli; do
  cp -rs "$PWD/$sub" "$tree/taskfleet/$sub"
done
find "$tree" -name __pycache__ -prune -exec rm -rf {} +
