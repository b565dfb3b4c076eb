"""The bare client of `bench/accuracy.py`: what a minimal aiohttp client measures.

One aiohttp session (connector limit = N), N tasks, raw chunks split into
lines, every `data:` line parsed with orjson.  Stamps `time.perf_counter()`
when `iter_any()` hands over a chunk, as simple clients do: TTFB at the first
event, TTFT at the first event carrying content, one ITL gap per later
content event (0 for a second event in the same chunk).  Writes one record per
input line, shaped like streamrun's (custom_id, status, metrics.ttft_s,
ttfb_s, itl_s), so accuracy.py reads both the same way.

    python bench/bare.py INPUTS.jsonl URL N OUT.jsonl [warm]

`warm`: first open N connections (N concurrent GET /models), so that the
measured requests start on open connections, as streamrun's do after
`--warmup N`.
"""

import asyncio, sys, time, orjson, aiohttp


async def main(path: str, base_url: str, n: int, out: str, warm: str = "") -> None:
    lines = [orjson.loads(l) for l in open(path, "rb") if l.strip()]
    url, todo, records = base_url.rstrip("/") + "/chat/completions", iter(lines), []
    model = None

    async def one(session: aiohttp.ClientSession, line: dict) -> dict:
        body = {"model": model, **{k: v for k, v in line.items() if k != "custom_id"}}
        body.update(stream=True, stream_options={"include_usage": True})
        t0 = time.perf_counter()
        ttfb = ttft = last = None
        itl, tail = [], b""
        async with session.post(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"}) as resp:
            async for chunk in resp.content.iter_any():
                now = time.perf_counter()
                parts = (tail + chunk).split(b"\n")
                tail = parts.pop()
                for part in parts:
                    if part[:5] != b"data:":
                        continue
                    ttfb = now if ttfb is None else ttfb
                    if part == b"data: [DONE]":
                        continue
                    choices = orjson.loads(part[5:]).get("choices")
                    if choices and choices[0].get("delta", {}).get("content"):
                        if ttft is None:
                            ttft = now
                        else:
                            itl.append(now - last)
                        last = now
            status = "ok" if resp.status == 200 and ttft is not None else "error"
        return {"custom_id": line.get("custom_id"), "status": status,
                "metrics": {"ttft_s": ttft and ttft - t0, "ttfb_s": ttfb and ttfb - t0, "itl_s": itl}}

    async def worker(session: aiohttp.ClientSession) -> None:
        for line in todo:  # a shared iterator: each line is taken by exactly one task
            try:
                records.append(await one(session, line))
            except (aiohttp.ClientError, OSError) as exc:
                records.append({"custom_id": line.get("custom_id"), "status": "error", "error": str(exc)})

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=n)) as session:
        async with session.get(base_url.rstrip("/") + "/models") as resp:  # as streamrun does without --model
            model = (await resp.json())["data"][0]["id"]
        if warm:
            async def models() -> None:
                async with session.get(base_url.rstrip("/") + "/models") as resp:
                    await resp.read()
            await asyncio.gather(*(models() for _ in range(n)))
        await asyncio.gather(*(worker(session) for _ in range(n)))
    with open(out, "wb") as f:
        f.writelines(orjson.dumps(r) + b"\n" for r in records)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), *sys.argv[4:6]))
