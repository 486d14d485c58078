#!/usr/bin/env bash
# Instruction throughput ceilings of the int8 kernels (one core): see scripts/bench-peak.c.
#   scripts/bench-peak.sh
# Builds with the Swift toolchain's clang at -O2 (as a release build), outside SwiftPM.
set -euo pipefail
cd "$(dirname "$0")/.."
# FB_BENCH_BIN=DIR runs a prebuilt bench-peak from DIR (a machine without the toolchain).
[ -n "${FB_BENCH_BIN:-}" ] && exec "$FB_BENCH_BIN/bench-peak" "$@"
cc=${CC:-$(command -v clang || echo /opt/swift/usr/bin/clang)}
out=${TMPDIR:-/tmp}/fb-bench-peak
"$cc" -O2 -std=gnu11 scripts/bench-peak.c -o "$out" -lm
exec "$out" "$@"
