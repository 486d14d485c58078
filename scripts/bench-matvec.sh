#!/usr/bin/env bash
# Decode-shaped matrix-vector benchmark of the C kernels (GB/s of weight bytes, per kernel path).
#   scripts/bench-matvec.sh [-t threads] [-p scalar,avx2,...] [-n 1,2,4] [q4:4608x1024 ...]
# Builds with the Swift toolchain's clang at -O2 (as a release build), outside SwiftPM.
set -euo pipefail
cd "$(dirname "$0")/.."
# FB_BENCH_BIN=DIR runs a prebuilt bench-matvec from DIR (a machine without the toolchain).
[ -n "${FB_BENCH_BIN:-}" ] && exec "$FB_BENCH_BIN/bench-matvec" "$@"
cc=${CC:-$(command -v clang || echo /opt/swift/usr/bin/clang)}
out=${TMPDIR:-/tmp}/fb-bench-matvec
"$cc" -O2 ${CFLAGS:-} -std=gnu11 -I Sources/Kernels/include Sources/Kernels/*.c Sources/Kernels/x86/*.c Sources/Kernels/arm/*.c scripts/bench-matvec.c -o "$out" -lm -lpthread
exec "$out" "$@"
