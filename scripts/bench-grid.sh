#!/usr/bin/env bash
# The two 4-bit grids side by side at LFM2-350M size (random weights): q4nl (the --bits 4 default) and q4
# (--grid uniform), in ROUNDS interleaved rounds (default 5; the machines are shared and noisy, so each round runs
# both files back to back), 2 threads, 512-token prompt, 128 decoded tokens; prints each round, the medians and the
# ratios q4nl / q4. FB_KERNELS=avx2 (etc.) runs another kernel set of this CPU. About two minutes.
#   scripts/bench-grid.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
swift build -c release --product fbconvert >/dev/null
swift build -c release --product fbrun >/dev/null
bin=$(swift build -c release --show-bin-path)
mkdir -p work
[ -f work/lfm2-350m-synth/model.safetensors ] || "$bin/fbconvert" synth --preset lfm2-350m --seed 1 -o work/lfm2-350m-synth
"$bin/fbconvert" -q --bits 4 -o work/grid-q4nl.fbm work/lfm2-350m-synth
"$bin/fbconvert" -q --bits 4 --grid uniform -o work/grid-q4.fbm work/lfm2-350m-synth
for round in $(seq "$rounds"); do
    for grid in q4 q4nl; do
        "$bin/fbrun" bench --model "work/grid-$grid.fbm" --prompt-tokens 512 --gen-tokens 128 --threads 2 --repeat 1 --json \
            2>/dev/null | python3 -c "
import json, sys
d = json.load(sys.stdin)
print('$grid', d['kernels'], round(d['prefill_tokens_per_s']['median'], 1), round(d['decode_tokens_per_s']['median'], 1))"
    done
done | python3 -c "
import statistics, sys
runs = {}
for line in sys.stdin:
    grid, kernels, prefill, decode = line.split()
    print(f'round: {grid:5} {kernels}  prefill {prefill} tok/s  decode {decode} tok/s')
    runs.setdefault(grid, []).append((float(prefill), float(decode)))
med = {g: [statistics.median(r[i] for r in v) for i in (0, 1)] for g, v in runs.items()}
for g in ('q4', 'q4nl'):
    print(f'median {g:5} prefill {med[g][0]:.1f} tok/s  decode {med[g][1]:.1f} tok/s')
print(f'q4nl / q4: prefill {med[\"q4nl\"][0] / med[\"q4\"][0]:.3f}, decode {med[\"q4nl\"][1] / med[\"q4\"][1]:.3f}')
"
