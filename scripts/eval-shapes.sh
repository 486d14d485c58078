#!/usr/bin/env bash
# The README's accuracy table: converts the trained model (models/firebolt-shapes) at 32, 8 and 4 bits (the 4-bit
# default grid q4nl, and q4 with --grid uniform), scores each
# on the held-out questions (fbrun eval, the 8- and 4-bit files compared with float32 answer by answer), measures
# decode speed (fbrun bench, 2 threads, 32-token prompt with an image, 64 decoded tokens), and prints one Markdown
# table. Release build; about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product fbconvert >/dev/null
swift build -c release --product fbrun >/dev/null
bin=$(swift build -c release --show-bin-path)
work=work/eval-shapes
mkdir -p "$work"
data=models/firebolt-shapes/eval/questions.jsonl
for bits in 32 8 4; do
    "$bin/fbconvert" --bits "$bits" -q -o "$work/shapes-$bits.fbm" models/firebolt-shapes
done
"$bin/fbconvert" --bits 4 --grid uniform -q -o "$work/shapes-4u.fbm" models/firebolt-shapes
echo "| precision | file | held-out accuracy | worst family | agreement with f32 | decode tok/s (2 threads) |"
echo "| --- | --- | --- | --- | --- | --- |"
for bits in 32 8 4 4u; do
    model=$work/shapes-$bits.fbm
    compare=()
    [ "$bits" != 32 ] && compare=(--compare "$work/shapes-32.fbm")
    "$bin/fbrun" eval --model "$model" --data "$data" "${compare[@]}" --threads 2 --json > "$work/eval-$bits.json" 2>/dev/null
    "$bin/fbrun" bench --model "$model" --image --prompt-tokens 32 --gen-tokens 64 --threads 2 --repeat 3 --json \
        > "$work/bench-$bits.json" 2>/dev/null
    python3 - "$bits" "$model" "$work/eval-$bits.json" "$work/bench-$bits.json" <<'EOF'
import json, os, sys
bits, model, eval_path, bench_path = sys.argv[1:]
e, b = json.load(open(eval_path)), json.load(open(bench_path))
s = e["score"]
worst = min(s["families"].items(), key=lambda kv: kv[1]["correct"] / kv[1]["questions"])
acc = lambda f: 100 * f["correct"] / f["questions"]
agree = f'{100 * s["overall"]["agreed"] / s["overall"]["questions"]:.1f}%' if "compare" in e else "–"
name = {"32": "f32", "8": "int8 (q8)", "4": "int4 (q4nl, default)", "4u": "int4 uniform (q4)"}[bits]
print(f'| {name} | {os.path.getsize(model) / 1e6:.1f} MB | {acc(s["overall"]):.1f}% ({s["overall"]["correct"]}/{s["overall"]["questions"]}) '
      f'| {worst[0]} {acc(worst[1]):.1f}% | {agree} | {b["decode_tokens_per_s"]["median"]:.0f} |')
EOF
done
