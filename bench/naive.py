"""The naive client: how many scripts do it.

`requests` with `stream=True`, `iter_lines()`, `json.loads` on every
`data:` line, one thread per concurrent stream (a ThreadPoolExecutor of
size N, one keep-alive Session per thread).  Prints one JSON line of totals
on stdout.

    python bench/naive.py PROMPTS.jsonl URL N
"""

from __future__ import annotations

import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests


def main(path: str, base_url: str, n: int) -> dict:
    with open(path, "rb") as f:
        bodies = []
        for line in f:
            if line.strip():
                obj = json.loads(line)
                obj.pop("custom_id", None)
                obj["stream"] = True
                obj["stream_options"] = {"include_usage": True}
                bodies.append(obj)
    url = base_url.rstrip("/") + "/chat/completions"
    local = threading.local()
    lock = threading.Lock()
    totals = {"ok": 0, "errors": 0, "events": 0}
    ttfts: list[float] = []

    def one(body: dict) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        t0 = time.perf_counter()
        first = None
        events = 0
        text = []
        try:
            with session.post(url, json=body, stream=True, timeout=300) as resp:
                resp.raise_for_status()
                for line in resp.iter_lines():
                    if not line.startswith(b"data:"):
                        continue
                    events += 1
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        continue  # read on to the end of the body so the connection is kept
                    chunk = json.loads(data)
                    choices = chunk.get("choices") or []
                    if choices:
                        content = (choices[0].get("delta") or {}).get("content")
                        if content:
                            if first is None:
                                first = time.perf_counter() - t0
                            text.append(content)
            ok = True
        except (requests.RequestException, ValueError):
            ok = False
        with lock:
            totals["ok" if ok else "errors"] += 1
            totals["events"] += events
            if first is not None:
                ttfts.append(first)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(max_workers=n) as pool:
        for _ in pool.map(one, bodies):
            pass
    return {**totals, "ttft_s": ttfts, "run_s": time.perf_counter() - t0}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2], int(sys.argv[3]))))
