#!/usr/bin/env bash
# fbserve under load: aggregate decode tokens/s and p50 / p95 time to first token at 1, 2, 4 and 8 concurrent clients,
# on the real-size random-weight Firebolt-VL at 4 bits (each request a different image, 128 tokens, no early stop).
# The single client's figures are the baseline, measured in the same run; docs/server.md has a dated table.
#   scripts/bench-serve.sh [--parallel N] [--threads N] [--requests R]
set -euo pipefail
cd "$(dirname "$0")/.."
parallel=4 threads=2 requests=2
while [ $# -gt 0 ]; do
    case $1 in
        --parallel) parallel=$2; shift 2 ;;
        --threads) threads=$2; shift 2 ;;
        --requests) requests=$2; shift 2 ;;
        *) echo "usage: scripts/bench-serve.sh [--parallel N] [--threads N] [--requests R]" >&2; exit 64 ;;
    esac
done
swift build -c release --product fbconvert >/dev/null
swift build -c release --product fbserve >/dev/null
bin=$(swift build -c release --show-bin-path)
mkdir -p work
[ -f work/firebolt-vl-synth/model.safetensors ] || "$bin/fbconvert" synth --preset firebolt-vl --seed 1 -o work/firebolt-vl-synth
[ -f work/firebolt-vl-q4.fbm ] || "$bin/fbconvert" -q --bits 4 -o work/firebolt-vl-q4.fbm work/firebolt-vl-synth
"$bin/fbserve" --model work/firebolt-vl-q4.fbm --port 0 --threads "$threads" --parallel "$parallel" --ctx 1024 \
    > work/bench-serve.out 2> work/bench-serve.err &
server=$!
trap 'kill $server 2>/dev/null; wait 2>/dev/null || true' EXIT
for _ in $(seq 300); do grep -q listening work/bench-serve.out 2>/dev/null && break; sleep 0.1; done
port=$(grep -o '127.0.0.1:[0-9]*' work/bench-serve.out | cut -d: -f2)
[ -n "$port" ] || { cat work/bench-serve.err; exit 1; }
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)
echo "fbserve --parallel $parallel --threads $threads, $cpu, kernels: $("$bin/fbserve" --help | grep -o 'this CPU runs: [^)]*')"
python3 scripts/bench-serve.py --port "$port" --clients 1 --requests 1 --max-tokens 16 --images models/firebolt-shapes/eval >/dev/null  # warm-up
# decode: tokens through decode steps over the steps' time (all sequences together); end to end: generated tokens over
# the round's wall time (vision and prefill included).
printf "%-8s %-14s %-10s %-18s %-12s %-12s\n" clients "decode tok/s" "× 1 client" "end-to-end tok/s" "TTFT p50 ms" "TTFT p95 ms"
single=""
for clients in 1 2 4 8; do
    line=$(python3 scripts/bench-serve.py --port "$port" --clients "$clients" --requests "$requests" --max-tokens 128 \
        --images models/firebolt-shapes/eval)
    read -r decode throughput p50 p95 < <(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); print(r["aggregate_decode_tokens_per_s"], r["throughput_tokens_per_s"], r["ttft_p50_ms"], r["ttft_p95_ms"])' "$line")
    [ -z "$single" ] && single=$decode
    printf "%-8s %-14s %-10s %-18s %-12s %-12s\n" "$clients" "$decode" "$(python3 -c "print(f'{$decode / $single:.2f}')")" "$throughput" "$p50" "$p95"
done
