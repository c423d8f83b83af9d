#!/usr/bin/env bash
# The main job end to end on embedded defaults. Filled in as the modules land.
set -euo pipefail
build=${1:-build}
"$build/cairn" --version
scripts/demo_cairnd.sh "$build"
