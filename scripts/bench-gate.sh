#!/usr/bin/env bash
# Benchmarks real-size random-weight models and compares them with bench/baseline.json (CI runs this after the
# tests). A regression — peak RSS +5%, decode −20% in both tokens/s and efficiency, prefill-per-compute −15%, any
# growth of the file — fails with a table. `scripts/bench-gate.sh --update` re-measures and stores the results as
# the new baseline (and appends them to bench/history.jsonl); do that on this machine kind when a change is meant
# to move them.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=--compare
[ "${1:-}" = "--update" ] && mode=--update
swift build -c release --product fbconvert >/dev/null
swift build -c release --product fbrun >/dev/null
bin=$(swift build -c release --show-bin-path)
mkdir -p work
threads=2
run() {  # label preset bits [bench options...]
    local label=$1 preset=$2 bits=$3
    shift 3
    [ -f "work/$preset-synth/model.safetensors" ] || "$bin/fbconvert" synth --preset "$preset" --seed 1 -o "work/$preset-synth"
    "$bin/fbconvert" -q --bits "$bits" -o "work/$preset-q$bits.fbm" "work/$preset-synth"
    echo "== $label"
    if [ $mode = --update ]; then
        "$bin/fbrun" bench --model "work/$preset-q$bits.fbm" --threads $threads --repeat 5 "$@" --label "$label" --update bench/baseline.json
        return
    fi
    # Shared machines are noisy: a regression must show in each of three independent runs to fail the gate.
    for attempt in 1 2 3; do
        if "$bin/fbrun" bench --model "work/$preset-q$bits.fbm" --threads $threads --repeat 5 "$@" --label "$label" \
            --compare bench/baseline.json; then
            return 0
        fi
        echo "bench-gate: $label regressed in attempt $attempt of 3" >&2
    done
    return 1
}
run lfm2-350m-q4 lfm2-350m 4 --prompt-tokens 512 --gen-tokens 128
# 512 prompt tokens for both: a 128-token prefill (~0.3 s) moved ±20% between runs, too noisy for a 15% gate.
run firebolt-vl-q4 firebolt-vl 4 --prompt-tokens 512 --gen-tokens 128 --image
