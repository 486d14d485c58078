#!/usr/bin/env bash
# Prefill-shaped batched products (fb_matmul_pool) in GFLOP/s, per route.
#   scripts/bench-gemm.sh [-t threads] [-n tokens] [-s seconds] [-r gemm,int8] [q4:4608x1024 ...]
# Builds with the Swift toolchain's clang at -O2 (as a release build), outside SwiftPM.
set -euo pipefail
cd "$(dirname "$0")/.."
# FB_BENCH_BIN=DIR runs a prebuilt bench-gemm from DIR (a machine without the toolchain).
[ -n "${FB_BENCH_BIN:-}" ] && exec "$FB_BENCH_BIN/bench-gemm" "$@"
cc=${CC:-$(command -v clang || echo /opt/swift/usr/bin/clang)}
out=${TMPDIR:-/tmp}/fb-bench-gemm
"$cc" -O2 -std=gnu11 -I Sources/Kernels/include Sources/Kernels/*.c Sources/Kernels/x86/*.c Sources/Kernels/arm/*.c scripts/bench-gemm.c -o "$out" -lm -lpthread
exec "$out" "$@"
