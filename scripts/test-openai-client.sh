#!/usr/bin/env bash
# fbserve against the official OpenAI Python client (part of scripts/test.sh): installs the pinned client into
# .venv-openai, converts the shipped shapes model at 4 bits, starts fbserve with an API key, and checks chat (with
# an image, streamed and whole), completions, models and errors against fbrun's greedy answers.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-openai
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/pip" freeze 2>/dev/null | diff -q - <(grep -v '^#' Tests/OpenAIClient/requirements.txt) >/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r Tests/OpenAIClient/requirements.txt
fi
bin=$(swift build -Xcc -O3 --show-bin-path)
work=$(mktemp -d)
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
"$bin/fbconvert" --bits 4 -q -o "$work/shapes-q4.fbm" models/firebolt-shapes
model="$work/shapes-q4.fbm" image=assets/example.png
answer() { "$bin/fbrun" --model "$model" --temperature 0 "$@" 2>/dev/null; }
prompt="<|im_start|>user
How many shapes are there?<|im_end|>
<|im_start|>assistant
"
"$venv/bin/python" - "$work/expected.json" <<PY
import json, subprocess, sys
def run(*args):
    out = subprocess.run(["$bin/fbrun", "--model", "$model", "--temperature", "0", *args], capture_output=True, text=True, check=True).stdout
    return out[:-1]  # fbrun ends the answer with a newline
questions = ["How many shapes are there?", "Where is the red triangle?", "What is in the picture?"]
prompt = """$prompt"""
json.dump({"model": "shapes-q4",
           "image_answers": {q: run("--image", "$image", "--prompt", q) for q in questions},
           "text": {"question": "What color is the circle?", "max_tokens": 16,
                    "answer": run("--prompt", "What color is the circle?", "--max-tokens", "16")},
           "completion": {"prompt": prompt, "max_tokens": 16,
                          "answer": run("--raw", "--prompt", "<|startoftext|>" + prompt, "--max-tokens", "16")}},
          open(sys.argv[1], "w"))
PY
"$bin/fbserve" --model "$model" --port 0 --threads 2 --api-key test-key > "$work/server.out" 2> "$work/server.err" &
server=$!
for _ in $(seq 100); do grep -q listening "$work/server.out" 2>/dev/null && break; sleep 0.1; done
port=$(grep -o '127.0.0.1:[0-9]*' "$work/server.out" | cut -d: -f2)
[ -n "$port" ] || { echo "fbserve did not start:"; cat "$work/server.err"; exit 1; }
"$venv/bin/python" Tests/OpenAIClient/openai_client_test.py "$port" "$work/expected.json" "$image"
kill -TERM "$server"
wait "$server"
server=""
