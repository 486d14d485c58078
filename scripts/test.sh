#!/usr/bin/env bash
# The test command (README, CI): builds everything, then runs the whole test suite.
# Heavy checks (real-size conversion benchmarks) are separate: see scripts/bench-convert.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --build-tests
swift test --skip-build
