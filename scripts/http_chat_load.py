#!/usr/bin/env python3
"""Closed-loop load on the router's OpenAI facade: plain chat completions (no tools, no stream)
from --concurrency threads, each on its own keep-alive HTTP connection, for --duration seconds.
Prints one JSON object: calls, errors, calls/s and latency percentiles in ms.

    python3 scripts/http_chat_load.py --addr 127.0.0.1:8080 [--key KEY] [--concurrency 8] [--duration 8]
"""
import argparse
import http.client
import json
import threading
import time

PROMPTS = [
    "What is the capital of France?",
    "Explain recursion in one sentence.",
    "Name three prime numbers.",
    "What does HTTP stand for?",
    "Translate 'good morning' into Spanish.",
    "How many legs does a spider have?",
    "What is 17 times 3?",
    "Who wrote Hamlet?",
]


def worker(addr, key, deadline, out, errors, k):
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {"content-type": "application/json"}
    if key:
        headers["authorization"] = f"Bearer {key}"
    i = k
    while time.perf_counter() < deadline:
        body = json.dumps({"model": "auto", "max_tokens": 16,
                           "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]})
        i += 1
        t = time.perf_counter()
        try:
            conn.request("POST", "/v1/chat/completions", body, headers)
            r = conn.getresponse()
            r.read()
            if r.status == 200:
                out.append((time.perf_counter() - t) * 1e3)
            else:
                errors.append(r.status)
        except (OSError, http.client.HTTPException) as e:
            errors.append(str(e))
            conn.close()
            conn = http.client.HTTPConnection(host, int(port), timeout=30)


def pct(xs, p):
    return xs[min(len(xs) - 1, int(p / 100 * len(xs)))] if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--addr", required=True, help="the router's HTTP address, HOST:PORT")
    ap.add_argument("--key", default="", help="API key (Bearer)")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--duration", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=1.0, help="seconds of calls not counted, first")
    a = ap.parse_args()
    for phase, secs in (("warmup", a.warmup), ("run", a.duration)):
        lat, errors = [], []
        start = time.perf_counter()
        threads = [threading.Thread(target=worker, args=(a.addr, a.key, start + secs, lat, errors, k))
                   for k in range(a.concurrency)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.perf_counter() - start
    lat.sort()
    print(json.dumps({"calls": len(lat), "errors": len(errors), "calls_per_s": len(lat) / elapsed,
                      "concurrency": a.concurrency,
                      "latency_ms": {"p50": pct(lat, 50), "p90": pct(lat, 90), "p99": pct(lat, 99),
                                     "mean": sum(lat) / len(lat) if lat else float("nan")}}))


if __name__ == "__main__":
    main()
