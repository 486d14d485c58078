#!/usr/bin/env bash
# Times every kernel set this CPU runs against the others in one run, so that the ratios between them are not
# spoiled by a shared machine's drift between runs:
#   0. the throughput ceilings of the int8 instructions on one core (scripts/bench-peak.sh);
#   1. decode-shaped matrix-vector products (scripts/bench-matvec.sh, GB/s of weights, one thread);
#   2. prefill-shaped int8 products (scripts/bench-gemm.sh, GFLOP/s, one thread);
#   3. `fbrun bench` of real-size random-weight models (4 bits) under each set, at each thread count.
#
#   scripts/bench-kernel-sets.sh [-t 1,4] [-m lfm2-350m,firebolt-vl] [-r repeats] [-k avx2,avx512-vnni]
#
# -k limits step 3 to some of the sets (steps 1 and 2 always time them all).
#
# FB_BENCH_BIN=DIR takes fbrun, fbconvert, bench-peak, bench-gemm and bench-matvec from DIR instead of building
# them (for a machine that has the binaries and their libraries but no toolchain). Models are made in work/ when
# missing.
set -euo pipefail
cd "$(dirname "$0")/.."
threads=1,4
models=lfm2-350m,firebolt-vl
repeats=3
model_sets=
while [ $# -gt 0 ]; do
    case $1 in
        -t) threads=$2; shift 2 ;;
        -m) models=$2; shift 2 ;;
        -r) repeats=$2; shift 2 ;;
        -k) model_sets=$2; shift 2 ;;
        *) echo "usage: $0 [-t 1,4] [-m lfm2-350m,firebolt-vl] [-r repeats] [-k sets]" >&2; exit 64 ;;
    esac
done
if [ -n "${FB_BENCH_BIN:-}" ]; then
    bin=$FB_BENCH_BIN
else
    swift build -c release --product fbconvert >/dev/null
    swift build -c release --product fbrun >/dev/null
    bin=$(swift build -c release --show-bin-path)
fi
# The sets this CPU runs, as `fbrun --help` lists them ("this CPU runs: scalar, avx2, ..."), without scalar.
sets=$("$bin/fbrun" --help | sed -n 's/.*this CPU runs: \([^)]*\)).*/\1/p' | tr -d ' ' | sed 's/^scalar,//')
[ -n "$sets" ] || { echo "bench-kernel-sets: no SIMD kernel set found in fbrun --help" >&2; exit 1; }
echo "== CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) CPUs; kernel sets: $sets"

echo "== int8 instruction ceilings, 1 core"
scripts/bench-peak.sh

echo "== decode: matrix-vector, 1 thread (GB/s of weights; cold = from memory, hot = from cache)"
scripts/bench-matvec.sh -t 1 -s 0.3 -p "$sets" q4:4608x1024 q4:1024x4608 q8:4608x1024

echo "== prefill: int8 products of 256 tokens, 1 thread"
for set in ${sets//,/ }; do
    FB_KERNELS=$set scripts/bench-gemm.sh -t 1 -n 256 -s 0.5 -r int8 q4:4608x1024 q4:1024x4608 q8:4608x1024
done

mkdir -p work
for model in ${models//,/ }; do
    [ -f "work/$model-synth/model.safetensors" ] || "$bin/fbconvert" synth --preset "$model" --seed 1 -o "work/$model-synth"
    [ -f "work/$model-q4.fbm" ] || "$bin/fbconvert" -q --bits 4 -o "work/$model-q4.fbm" "work/$model-synth"
    options=(--prompt-tokens 512 --gen-tokens 128)
    [ "$model" = firebolt-vl ] && options=(--image --prompt-tokens 32 --gen-tokens 64)
    for t in ${threads//,/ }; do
        for set in $(echo "${model_sets:-$sets}" | tr , " "); do
            echo "== fbrun bench $model q4, $t thread(s), FB_KERNELS=$set"
            FB_KERNELS=$set "$bin/fbrun" bench --model "work/$model-q4.fbm" --threads "$t" --repeat "$repeats" \
                "${options[@]}" 2>/dev/null | grep -E "load|vision|CMM|prefill|decode,|first token|peak RSS|triad"
        done
    done
done
