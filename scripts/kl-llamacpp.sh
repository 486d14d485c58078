#!/usr/bin/env bash
# KL divergence of int8 / 4-bit logits from float32, ours against llama.cpp's, on one LFM2 made of real trained
# matrices (training/real_matrix_lfm2.py: MiniLM-L6's, hidden 384, 4 layers, 2 with attention).
#   LLAMA_CPP=/path/to/llama.cpp (built: build/bin/llama-perplexity, llama-quantize, llama-tokenize) \
#   PY=venv/bin/python (training/requirements.txt, transformers and llama.cpp's gguf-py, for its converter) \
#   scripts/kl-llamacpp.sh
# Both sides score the same 16 chunks of 128 tokens of this repository's docs, llama-perplexity's way: the chunk's
# first token made BOS, the KL of positions 64-126 against the float32 model of the same runtime (f16 KV caches).
# llama.cpp stays outside the repository; its converter's pre-tokenizer check is answered "lfm2" (the tokenizer is
# the lfm2-350m synth's, which it does not know; the scores do not depend on it).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${LLAMA_CPP:?set LLAMA_CPP to a built llama.cpp source tree}"
PY=${PY:-.venv-train/bin/python}
B=$LLAMA_CPP/build/bin
out=work/kl-llamacpp
mkdir -p "$out"
swift build -c release --product fbconvert >/dev/null
swift build -c release --product fbrun >/dev/null
bin=$(swift build -c release --show-bin-path)
[ -f work/lfm2-350m-synth/tokenizer.json ] || "$bin/fbconvert" synth --preset lfm2-350m --seed 1 -o work/lfm2-350m-synth
"$PY" training/real_matrix_lfm2.py Tests/Fixtures/real-weights/minilm-l6-matrices.safetensors work/lfm2-350m-synth "$out/model"
cat README.md ARCHITECTURE.md training/README.md > "$out/text.txt"

# llama.cpp: float32 GGUF, Q8_0 and Q4_0 --pure from it, llama-perplexity's own KL statistics.
"$PY" - "$LLAMA_CPP" "$out/model" "$out/f32.gguf" <<'PYEOF'
import runpy, sys
root, model, outfile = sys.argv[1:]
sys.path.insert(0, root)
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "lfm2"
sys.argv = ["convert_hf_to_gguf.py", "--outtype", "f32", "--outfile", outfile, model]
runpy.run_path(f"{root}/convert_hf_to_gguf.py", run_name="__main__")
PYEOF
"$B/llama-quantize" "$out/f32.gguf" "$out/q8_0.gguf" Q8_0 >/dev/null 2>&1
"$B/llama-quantize" --pure "$out/f32.gguf" "$out/q4_0.gguf" Q4_0 >/dev/null 2>&1
ppl() { "$B/llama-perplexity" -f "$out/text.txt" -c 128 --chunks 16 -t 2 --kl-divergence-base "$out/base.bin" "$@" 2>&1; }
ppl -m "$out/f32.gguf" >/dev/null
for q in q8_0 q4_0; do
    echo "llama.cpp $q: $(ppl -m "$out/$q.gguf" --kl-divergence | grep -E 'Mean    KLD|99.0%   KLD|Maximum KLD|Same top p' | tr -s ' ' | tr '\n' ' ')"
done

# Ours: the same token ids, cut into the same chunks, through fbrun logits; KL as kl-shapes.sh computes it.
"$B/llama-tokenize" -m "$out/f32.gguf" -f "$out/text.txt" --ids --log-disable 2>/dev/null | tail -1 > "$out/ids.txt"
for spec in f32:32 q8:8 q4nl:4; do
    "$bin/fbconvert" -q --bits "${spec#*:}" -o "$out/${spec%%:*}.fbm" "$out/model"
done
"$PY" - "$bin/fbrun" "$out" <<'PYEOF'
import json, os, subprocess, sys
import numpy as np
fbrun, out = sys.argv[1:]
ids = json.load(open(f"{out}/ids.txt"))
chunks = [[1] + ids[c * 128 + 1:(c + 1) * 128] for c in range(16)]   # first token made BOS, as llama-perplexity does

def log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))

def scored(model, chunk, env=None):
    """Log-probabilities at the positions llama-perplexity scores (64-126)."""
    subprocess.run([fbrun, "logits", "--model", f"{out}/{model}.fbm", "--prompt-ids", ",".join(map(str, chunk)),
                    "-t", "2", "-o", f"{out}/logits.npy"], check=True, capture_output=True, env={**os.environ, **(env or {})})
    return log_softmax(np.load(f"{out}/logits.npy").astype(np.float64)[64:127])

refs = [scored("f32", chunk) for chunk in chunks]
for name, model, env in [("q8", "q8", None), ("q8, float activations (FB_BATCHED=gemm)", "q8", {"FB_BATCHED": "gemm"}),
                         ("q4nl", "q4nl", None)]:
    kl, same = [], []
    for ref, chunk in zip(refs, chunks):
        q = scored(model, chunk, env)
        kl.append((np.exp(ref) * (ref - q)).sum(-1))
        same.append(ref.argmax(-1) == q.argmax(-1))
    kl, same = np.concatenate(kl), np.concatenate(same)
    print(f"fbrun {name}: mean KLD {kl.mean():.6f}  99.0% KLD {np.percentile(kl, 99):.6f}  Maximum KLD {kl.max():.6f}  "
          f"Same top p {same.mean() * 100:.3f}%  ({kl.size} positions)")
PYEOF
