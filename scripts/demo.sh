#!/usr/bin/env bash
# The main job: set up, build, make a real-size Firebolt-VL checkpoint with random weights, convert it to 4 bits,
# inspect it, and ask it a question. Speed and memory are printed at the end. The answer of a random-weight model
# is meaningless text; speed and memory do not depend on the weight values.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release --product fbconvert
swift build -c release --product fbrun
bin=$(swift build -c release --show-bin-path)
work=work
mkdir -p "$work"
if [ ! -f "$work/firebolt-vl-synth/model.safetensors" ]; then
    "$bin/fbconvert" synth --preset firebolt-vl --seed 1 -o "$work/firebolt-vl-synth"
fi
"$bin/fbconvert" --bits 4 -o "$work/firebolt-vl-q4.fbm" "$work/firebolt-vl-synth"
"$bin/fbconvert" inspect "$work/firebolt-vl-q4.fbm" > "$work/firebolt-vl-q4.inspect.txt"
head -16 "$work/firebolt-vl-q4.inspect.txt"
"$bin/fbrun" --model "$work/firebolt-vl-q4.fbm" --image assets/example.png --prompt "What is in the picture?" \
    --max-tokens 48 --temperature 0
