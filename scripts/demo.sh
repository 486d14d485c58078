#!/usr/bin/env bash
# The main job, on a fresh Debian machine: set up, build, then
#  1. convert the trained Firebolt-VL the repository ships (models/firebolt-shapes, a small model trained on the
#     shapes world, see its README) to 4 bits and ask it about assets/example.png, an image from that world;
#  2. the speed run: a Firebolt-VL at the released size with random weights (speed and memory do not depend on the
#     weight values; its answer is meaningless text), converted to 4 bits and asked the same question.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release --product fbconvert
swift build -c release --product fbrun
bin=$(swift build -c release --show-bin-path)
work=work
mkdir -p "$work"

echo "== A trained model: models/firebolt-shapes at 4 bits, asked about assets/example.png"
"$bin/fbconvert" --bits 4 -q -o "$work/firebolt-shapes-q4.fbm" models/firebolt-shapes
# The world's answers for this image (training/shapes_world.py image --seed 21 prints them all).
while IFS='|' read -r question expected; do
    answer=$("$bin/fbrun" --model "$work/firebolt-shapes-q4.fbm" --image assets/example.png --prompt "$question" \
        --temperature 0 2>/dev/null)
    mark="right"; [ "$answer" = "$expected" ] || mark="WRONG, the answer is: $expected"
    printf '%-30s %-72s (%s)\n' "$question" "$answer" "$mark"
done <<'EOF2'
How many shapes are there?|four
What color is the circle?|blue
What shape is the red one?|triangle
Is there a green triangle?|yes
Is there a red square?|no
Where is the red triangle?|top left
Where is the blue circle?|bottom left
What is in the picture?|a red triangle, a yellow triangle, a blue circle and a green triangle
EOF2
"$bin/fbrun" --model "$work/firebolt-shapes-q4.fbm" --image assets/example.png --prompt "What is in the picture?" \
    --temperature 0 >/dev/null

echo
echo "== The speed run: Firebolt-VL at the released size (0.47B parameters at run time), random weights, 4 bits"
if [ ! -f "$work/firebolt-vl-synth/model.safetensors" ]; then
    "$bin/fbconvert" synth --preset firebolt-vl --seed 1 -o "$work/firebolt-vl-synth"
fi
"$bin/fbconvert" --bits 4 -o "$work/firebolt-vl-q4.fbm" "$work/firebolt-vl-synth"
"$bin/fbconvert" inspect "$work/firebolt-vl-q4.fbm" > "$work/firebolt-vl-q4.inspect.txt"
head -16 "$work/firebolt-vl-q4.inspect.txt"
echo "(random weights: the text below is meaningless; the figures after it are the point)"
"$bin/fbrun" --model "$work/firebolt-vl-q4.fbm" --image assets/example.png --prompt "What is in the picture?" \
    --max-tokens 48 --temperature 0
