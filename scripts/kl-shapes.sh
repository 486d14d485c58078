#!/usr/bin/env bash
# Logit error of the trained model (models/firebolt-shapes) at each storage type against float32 weights with the
# float32 KV cache: mean, p99 and max KL divergence of the next-token distribution over every prompt position of the
# first N held-out questions (default 60; image + question, ~3,000 positions), and the same with float activations in
# the batched products (FB_BATCHED=gemm) to separate the int8-activation share. Needs python3 with NumPy. ~1 minute.
#   scripts/kl-shapes.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-60}
swift build -c release --product fbconvert >/dev/null
swift build -c release --product fbrun >/dev/null
bin=$(swift build -c release --show-bin-path)
work=work/kl-shapes
mkdir -p "$work"
"$bin/fbconvert" -q --bits 32 -o "$work/f32.fbm" models/firebolt-shapes
"$bin/fbconvert" -q --bits 8 -o "$work/q8.fbm" models/firebolt-shapes
"$bin/fbconvert" -q --bits 4 -o "$work/q4nl.fbm" models/firebolt-shapes
"$bin/fbconvert" -q --bits 4 --grid uniform -o "$work/q4.fbm" models/firebolt-shapes
python3 - "$bin/fbrun" "$work" "$n" <<'PY'
import json, os, subprocess, sys
import numpy as np
fbrun, work, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
data = "models/firebolt-shapes/eval/"
questions = [json.loads(line) for line in open(data + "questions.jsonl")][:n]

def logits(model, q, env=None, extra=()):
    out = f"{work}/logits.npy"
    subprocess.run([fbrun, "logits", "--model", f"{work}/{model}.fbm", "--prompt", q["question"], "--image",
                    data + q["image"], "-o", out, "--threads", "2", "--no-verify", *extra], check=True,
                   capture_output=True, env={**os.environ, **(env or {})})
    return np.load(out).astype(np.float64)

def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))

runs = [("f32, f16 KV cache", "f32", {}, ())]
for m in ("q8", "q4nl", "q4"):
    runs += [(f"{m}", m, {}, ()), (f"{m}, float activations (FB_BATCHED=gemm), f32 cache", m, {"FB_BATCHED": "gemm"},
             ("--kv-cache", "f32"))]
kl = {name: [] for name, *_ in runs}
for q in questions:
    ref = log_softmax(logits("f32", q, extra=("--kv-cache", "f32")))
    for name, model, env, extra in runs:
        kl[name].append((np.exp(ref) * (ref - log_softmax(logits(model, q, env, extra)))).sum(-1))
print(f"| weights | mean KL | p99 | max |  ({sum(len(k) for k in kl[runs[0][0]])} positions, {n} questions)")
print("| --- | --- | --- | --- |")
for name, values in kl.items():
    a = np.concatenate(values)
    print(f"| {name} | {a.mean():.2e} | {np.percentile(a, 99):.2e} | {a.max():.2e} |")
PY
