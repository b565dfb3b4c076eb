"""OpenAI's Files and Batch API: the calls a batch run makes, and their answers typed.

Why its own module: the shapes are OpenAI's (a file of Batch request lines,
a batch object with ``status`` and ``request_counts``, output and error
files of ``{id, custom_id, response, error}`` lines); nothing of the run's
files or state is known here.

- ``upload``: ``POST /v1/files`` (multipart, ``purpose=batch``), named so
  that ``find_file`` finds it again after a crash (``GET /v1/files``).
- ``create``: ``POST /v1/batches`` with ``input_file_id``, ``endpoint``,
  ``completion_window: "24h"`` and ``metadata`` naming the run and the
  part; ``find`` lists ``GET /v1/batches`` (newest first) for a batch with
  that metadata, back to a little before the create was sent.
- ``get`` / ``cancel``: ``GET /v1/batches/{id}``, ``POST .../cancel``.
- ``results``: the output file, then the error file, into one sink.
"""

from __future__ import annotations

import os
from tempfile import TemporaryFile
from typing import IO, Any

import aiohttp

from .http import Client, ProviderError
from .remote import CANCELLED, COMPLETED, ERRORED, EXPIRED, FAILED, SUCCEEDED, Outcome, Remote, json_object

ENDED = (COMPLETED, EXPIRED, CANCELLED, FAILED)
LOOK_BACK_S = 600.0  # how far before a create's `since` a listing still looks (the provider's clock may differ)
RUN_KEY, PART_KEY = "streamrun_run", "streamrun_part"


def file_name(run: str, index: int, fingerprint: str) -> str:
    """The input file's name: the run, the part and its lines, so a rerun can find it."""
    return f"streamrun-{run}-part{index}-{fingerprint[:12]}.jsonl"


def metadata(run: str, index: int, lines: int, fingerprint: str, output: str) -> dict[str, str]:
    """What the batch carries: the run and the part it is (`find` looks for them), its lines, the output."""
    return {RUN_KEY: run, PART_KEY: str(index), "streamrun_lines": f"{lines} lines, fingerprint {fingerprint}",
            "streamrun_output": os.path.basename(output)[:512]}


def _remote(obj: Any) -> Remote:
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
        raise ProviderError(f"not an OpenAI batch object: {str(obj)[:200]}")
    status = str(obj.get("status"))
    counts = json_object(obj.get("request_counts"))
    errors = (obj.get("errors") or {}).get("data") if isinstance(obj.get("errors"), dict) else None
    problem = "; ".join(
        (f"line {e.get('line')}: " if e.get("line") else "") + f"{e.get('code')}: {e.get('message')}"
        for e in errors[:5] if isinstance(e, dict)) if errors else None
    files = tuple(f for f in (obj.get("output_file_id"), obj.get("error_file_id")) if isinstance(f, str))
    meta = json_object(obj.get("metadata"))
    created = obj.get("created_at")
    return Remote(obj["id"], status, status if status in ENDED else None,
                  {k: v for k, v in counts.items() if isinstance(v, int)},
                  float(created) if isinstance(created, (int, float)) else 0.0, problem, files, None, meta,
                  counts.get("total") if isinstance(counts.get("total"), int) else None)


class OpenAIBatches:
    """The Batch API of one OpenAI-compatible base URL."""

    uploads = True  # a part's lines go up as a file first

    def __init__(self, client: Client) -> None:
        self.client = client

    async def upload(self, name: str, path: str) -> str:
        opened: list[IO[bytes]] = []

        def form() -> aiohttp.FormData:  # a fresh one for each attempt: a form's file is read once
            opened.append(open(path, "rb"))
            data = aiohttp.FormData()
            data.add_field("purpose", "batch")
            data.add_field("file", opened[-1], filename=name, content_type="application/jsonl")
            return data

        try:
            obj = await self.client.json("POST", "/v1/files", what=f"uploading {name} (POST /v1/files)",
                                         data=form, creates=True)
        finally:
            for f in opened:
                f.close()
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            raise ProviderError(f"POST /v1/files: not a file object: {str(obj)[:200]}")
        return obj["id"]

    async def find_file(self, name: str) -> str | None:
        """The id of an uploaded batch file of this name (the newest), if there is one."""
        after = None
        while True:
            params = {"purpose": "batch", "order": "desc", "limit": "10000", **({"after": after} if after else {})}
            page = await self.client.json("GET", "/v1/files", what="listing the files (GET /v1/files)",
                                          params=params)
            data = page.get("data") if isinstance(page, dict) else None
            for f in data or []:
                if isinstance(f, dict) and f.get("filename") == name and isinstance(f.get("id"), str):
                    return f["id"]
            if not data or not page.get("has_more"):
                return None
            after = data[-1].get("id")

    async def create(self, file_id: str, endpoint: str, meta: dict[str, str]) -> Remote:
        body = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": "24h", "metadata": meta}
        return _remote(await self.client.json("POST", "/v1/batches", what="creating a batch (POST /v1/batches)",
                                              body=body, creates=True))

    async def find(self, run: str, index: int, since: float) -> Remote | None:
        """The batch of this run's part `index` created since a little before `since`, if there is one."""
        after = None
        while True:
            params = {"limit": "100", **({"after": after} if after else {})}
            page = await self.client.json("GET", "/v1/batches", what="listing the batches (GET /v1/batches)",
                                          params=params)
            data = page.get("data") if isinstance(page, dict) else None
            for obj in data or []:
                remote = _remote(obj)
                if remote.metadata.get(RUN_KEY) == run and remote.metadata.get(PART_KEY) == str(index):
                    return remote
                if remote.created_at and remote.created_at < since - LOOK_BACK_S:
                    return None  # newest first: the rest are older than the create
            if not data or not page.get("has_more"):
                return None
            after = data[-1].get("id")

    async def get(self, batch_id: str) -> Remote:
        return _remote(await self.client.json("GET", f"/v1/batches/{batch_id}",
                                              what=f"polling batch {batch_id} (GET /v1/batches/{{id}})"))

    async def cancel(self, batch_id: str) -> Remote:
        return _remote(await self.client.json("POST", f"/v1/batches/{batch_id}/cancel", body={},
                                              what=f"cancelling batch {batch_id} (POST /v1/batches/{{id}}/cancel)"))

    async def results(self, remote: Remote, sink: IO[bytes]) -> None:
        """The output file's lines, then the error file's, appended to `sink`."""
        for file_id in remote.files:
            with TemporaryFile() as part:
                await self.client.download(f"/v1/files/{file_id}/content", part,
                                           what=f"downloading {file_id} (GET /v1/files/{{id}}/content)")
                part.seek(0)
                last = b"\n"
                while chunk := part.read(1 << 20):
                    sink.write(chunk)
                    last = chunk[-1:]
                if last != b"\n":  # the next file's first line starts a line of its own
                    sink.write(b"\n")

    @staticmethod
    def outcome(line: Any) -> Outcome:
        """One output or error file line; ValueError when it is not one."""
        if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
            raise ValueError("not a Batch output line (no custom_id)")
        cid = line["custom_id"]
        response, error = line.get("response"), line.get("error")
        if isinstance(response, dict):
            status = response.get("status_code")
            body = response.get("body")
            rid = response.get("request_id") if isinstance(response.get("request_id"), str) else None
            if status == 200 and isinstance(body, dict):
                return Outcome(cid, SUCCEEDED, body, 200, request_id=rid)
            err = json_object(body.get("error")) if isinstance(body, dict) else {}
            code = err.get("code") or err.get("type")
            return Outcome(cid, ERRORED, None, status if isinstance(status, int) else None,
                           code if isinstance(code, str) else None, _text(err.get("message")) or f"HTTP {status}",
                           rid)
        if isinstance(error, dict):
            code = error.get("code") if isinstance(error.get("code"), str) else None
            kind = {"batch_expired": EXPIRED, "batch_cancelled": CANCELLED}.get(code or "", ERRORED)
            return Outcome(cid, kind, None, None, code, _text(error.get("message")))
        raise ValueError("neither a response nor an error")


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None
