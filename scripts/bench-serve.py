#!/usr/bin/env python3
"""Load generator for fbserve (standard library only): N concurrent clients, each sending streaming chat requests;
reports aggregate decode tokens/s and p50 / p95 time to first token. Used by scripts/bench-serve.sh."""
import argparse
import base64
import glob
import http.client
import json
import threading
import time


def one_request(port, body):
    """Returns (time to first content token, completion tokens, seconds from first token to the end)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", body=json.dumps(body), headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"status {response.status}: {response.read()[:200]!r}")
    first = None
    tokens = 0
    for raw in response:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            tokens = chunk["usage"]["completion_tokens"]
        for choice in chunk.get("choices", []):
            if choice.get("delta", {}).get("content") and first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    conn.close()
    return (first - start) if first else float("nan"), tokens, end - (first or end)


def decode_counters(port):
    """(decode tokens, decode seconds) from /metrics: rows through decode steps and the steps' time."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    conn.request("GET", "/metrics")
    values = {}
    for line in conn.getresponse().read().decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    conn.close()
    return values.get("fbserve_decode_tokens_total", 0), values.get("fbserve_decode_seconds_total", 0)


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clients", type=int, required=True)
    parser.add_argument("--requests", type=int, default=2, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--images", help="a folder of PNGs: each request asks about a different one")
    args = parser.parse_args()
    images = sorted(glob.glob(f"{args.images}/*.png")) if args.images else []
    results, errors = [], []
    lock = threading.Lock()

    def client(index):
        for r in range(args.requests):
            # Each request its own prompt (no prefix shared with another client's), fixed length, no early stop.
            question = f"Client {index} request {r}: tell me a long story about the sea."
            content = question
            if images:
                png = open(images[(index * args.requests + r) % len(images)], "rb").read()
                content = [{"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()}},
                           {"type": "text", "text": question}]
            body = {"messages": [{"role": "user", "content": content}],
                    "max_tokens": args.max_tokens, "temperature": 0, "stream": True,
                    "stream_options": {"include_usage": True}}
            try:
                result = one_request(args.port, body)
                with lock:
                    results.append(result)
            except Exception as e:  # reported, and the run fails
                with lock:
                    errors.append(str(e))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
    tokens_before, seconds_before = decode_counters(args.port)
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    tokens_after, seconds_after = decode_counters(args.port)
    if errors:
        raise SystemExit(f"{len(errors)} requests failed: {errors[0]}")
    ttft = [r[0] * 1000 for r in results]
    tokens = sum(r[1] for r in results)
    print(json.dumps({"clients": args.clients, "requests": len(results), "completion_tokens": tokens,
                      # decode steps only (every running sequence's token per step, over the steps' time)
                      "aggregate_decode_tokens_per_s": round((tokens_after - tokens_before) / (seconds_after - seconds_before), 1),
                      # end to end: generated tokens over the wall time, prefill and vision included
                      "throughput_tokens_per_s": round(tokens / wall, 1),
                      "per_stream_tokens_per_s": round(sum(r[1] / r[2] for r in results if r[2] > 0) / len(results), 1),
                      "ttft_p50_ms": round(percentile(ttft, 50), 1), "ttft_p95_ms": round(percentile(ttft, 95), 1),
                      "wall_s": round(wall, 2)}))


if __name__ == "__main__":
    main()
