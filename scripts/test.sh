#!/usr/bin/env bash
# The test command (README, CI): builds everything, then runs the whole test suite.
# Heavy checks (real-size conversion benchmarks) are separate: see scripts/bench-convert.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
# -Xcc -O3: the kernels optimised in the debug build too (Package.swift leaves them at the default, -O0).
swift build --build-tests -Xcc -O3
swift test --skip-build -Xcc -O3
# fbserve through the official OpenAI Python client (a pinned venv, installed from the package index).
scripts/test-openai-client.sh
# The runtime's tests again on the x86 kernel sets this machine kind lacks (AVX-VNNI, AVX-512, AVX-512 VNNI), with
# SIMDe's portable intrinsics standing in for the instructions: a second build, in .build-emulated-x86.
if [ "$(uname -m)" = x86_64 ]; then scripts/test-x86-emulated.sh --runtime; fi
