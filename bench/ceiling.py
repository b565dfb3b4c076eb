"""The ceilings: the least a Python asyncio client can do per stream.

One aiohttp session (connector limit = N), N tasks, raw chunks.  Two modes:

* count (the default): `data:` counted with bytes.count, TTFT at the first
  chunk holding a content delta.  No SSE decoding, no JSON, no records.
* parse: every read split into lines, every `data:` line's JSON parsed with
  orjson (the least any client that reads the answers must do), TTFT at the
  first chunk whose parsed events carried content.

Whatever streamrun spends on top of these is its overhead.  Prints one JSON
line of totals on stdout.

    python bench/ceiling.py PROMPTS.jsonl URL N [count|parse]
"""

import asyncio, sys, time, orjson, aiohttp


async def main(path: str, base_url: str, n: int, mode: str = "count") -> dict:
    bodies = [orjson.dumps({**{k: v for k, v in orjson.loads(l).items() if k != "custom_id"}, "stream": True,
                            "stream_options": {"include_usage": True}}) for l in open(path, "rb") if l.strip()]
    url, todo, ttfts, totals = base_url.rstrip("/") + "/chat/completions", iter(bodies), [], [0, 0, 0]  # ok, err, events
    loads = orjson.loads

    async def count(resp, t0):
        first, tail, events = None, b"", 0
        async for chunk in resp.content.iter_any():
            if first is None and b'{"content":"' in chunk:
                first = time.perf_counter() - t0
            events += (tail + chunk).count(b"data:")  # the 4-byte tail catches a split "data:"
            tail = chunk[-4:]
        return first, events

    async def parse(resp, t0):
        first, tail, events = None, b"", 0
        async for chunk in resp.content.iter_any():
            lines = (tail + chunk).split(b"\n")
            tail = lines.pop()
            for line in lines:
                if line[:5] == b"data:":
                    events += 1
                    if line != b"data: [DONE]":
                        obj = loads(line[5:])
                        if first is None and obj["choices"] and obj["choices"][0]["delta"].get("content"):
                            first = time.perf_counter() - t0
        return first, events

    read = parse if mode == "parse" else count

    async def worker(session: aiohttp.ClientSession) -> None:
        for body in todo:  # a shared iterator: each body is taken by exactly one task
            t0, first, events, status = time.perf_counter(), None, 0, 0
            try:
                async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                    first, events = await read(resp, t0)
                    status = resp.status
            except (aiohttp.ClientError, OSError):
                pass
            totals[0 if status == 200 else 1] += 1
            totals[2] += events
            if first is not None:
                ttfts.append(first)

    t0 = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=n)) as session:
        await asyncio.gather(*(worker(session) for _ in range(n)))
    return {"ok": totals[0], "errors": totals[1], "events": totals[2], "ttft_s": ttfts,
            "run_s": time.perf_counter() - t0}


if __name__ == "__main__":
    result = asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:5]))
    sys.stdout.buffer.write(orjson.dumps(result) + b"\n")
