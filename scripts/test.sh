#!/usr/bin/env bash
# The test command (README, CI): builds everything, then runs the whole test suite.
# Heavy checks (real-size conversion benchmarks) are separate: see scripts/bench-convert.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --build-tests
swift test --skip-build
# The runtime's tests again on the x86 kernel sets this machine kind lacks (AVX-VNNI, AVX-512, AVX-512 VNNI), with
# SIMDe's portable intrinsics standing in for the instructions: a second build, in .build-emulated-x86.
if [ "$(uname -m)" = x86_64 ]; then scripts/test-x86-emulated.sh --runtime; fi
