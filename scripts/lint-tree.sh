#!/usr/bin/env bash
# Builds build/lint-tree/taskfleet: the installed package laid out as one folder of symlinks (sdk/taskfleet ->
# taskfleet, worker/taskfleet/worker -> taskfleet.worker, ...). import-linter (grimp) finds a package with importlib
# and walks the one folder it names, so it would not see the sub-packages kept in the other source roots. Rebuilt on
# every run; takes milliseconds.
set -euo pipefail
cd "$(dirname "$0")/.."
tree=build/lint-tree
rm -rf "$tree"
mkdir -p "$tree"
cp -rs "$PWD/sdk/taskfleet" "$tree/taskfleet"
for sub in worker operator cli dashboard; do
  cp -rs "$PWD/$sub/taskfleet/$sub" "$tree/taskfleet/$sub"
done
find "$tree" -name __pycache__ -prune -exec rm -rf {} +
