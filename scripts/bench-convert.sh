#!/usr/bin/env bash
# Converter throughput and memory on an LFM2-350M-sized f32 checkpoint (1.42 GB), generated here (not committed).
# Usage: scripts/bench-convert.sh [bits]   — prints the converter's summary (MB/s of input, peak RSS).
set -euo pipefail
cd "$(dirname "$0")/.."
bits=${1:-4}
swift build -c release --product fbconvert >/dev/null
bin=$(swift build -c release --show-bin-path)
mkdir -p work
[ -f work/lfm2-350m-synth/model.safetensors ] || "$bin/fbconvert" synth --preset lfm2-350m --seed 1 -o work/lfm2-350m-synth
# Start from a cold page cache for the input where we may (root): the converter must stream it, not hold it.
sync; (echo 1 > /proc/sys/vm/drop_caches) 2>/dev/null || true
"$bin/fbconvert" --bits "$bits" -o work/lfm2-350m-q$bits.fbm work/lfm2-350m-synth
