"""Anthropic's Message Batches: the calls a batch run makes, and their answers typed.

Why its own module: the shapes are Anthropic's (one create request holding
every ``{custom_id, params}``, ``processing_status`` and
``request_counts``, a ``results_url`` of ``{custom_id, result}`` lines);
nothing of the run's files or state is known here.

A Message Batch carries no metadata, so a create that may have arrived
(`http.Unsure`, or a crash before its id was kept) is looked for by what
can be seen of it: ``find`` lists the batches (newest first) created from
a little before the create was sent, holding as many requests as the part,
and not being cancelled.  The driver adopts the one candidate, and stops
(exit 2) rather than guess between several.
"""

from __future__ import annotations

from datetime import datetime
from typing import IO, Any

from yarl import URL

from .http import Client, ProviderError
from .remote import CANCELLED, COMPLETED, ERRORED, EXPIRED, SUCCEEDED, Outcome, Remote, json_object

BATCHES = "/v1/messages/batches"
LOOK_BACK_S = 600.0  # how far before a create's `since` a listing still looks (the provider's clock may differ)
_KINDS = {"succeeded": SUCCEEDED, "errored": ERRORED, "canceled": CANCELLED, "expired": EXPIRED}


def _time(value: Any) -> float:
    try:
        return datetime.fromisoformat(value).timestamp() if isinstance(value, str) else 0.0
    except ValueError:
        return 0.0


def _remote(obj: Any) -> Remote:
    if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
        raise ProviderError(f"not a Message Batch object: {str(obj)[:200]}")
    status = str(obj.get("processing_status"))
    counts = {k: v for k, v in json_object(obj.get("request_counts")).items() if isinstance(v, int)}
    end = None
    if status == "ended":  # Anthropic's one end: each line's result says how it went
        end = CANCELLED if obj.get("cancel_initiated_at") else EXPIRED if counts.get("expired") else COMPLETED
    url = obj.get("results_url") if isinstance(obj.get("results_url"), str) else None
    remote = Remote(obj["id"], status, end, counts, _time(obj.get("created_at")), None, (), url, {},
                    sum(counts.values()) if counts else None)
    remote.metadata["cancelling"] = bool(obj.get("cancel_initiated_at"))
    return remote


class AnthropicBatches:
    """The Message Batches of one Anthropic base URL."""

    uploads = False  # the requests go in the create call itself

    def __init__(self, client: Client) -> None:
        self.client = client

    async def create(self, body_path: str) -> Remote:
        """One batch of the requests in `body_path` (the create request's JSON body, written by the driver)."""
        opened: list[IO[bytes]] = []

        def body() -> IO[bytes]:
            opened.append(open(body_path, "rb"))
            return opened[-1]

        try:
            return _remote(await self.client.json("POST", BATCHES, data=body, creates=True,
                                                  headers={"Content-Type": "application/json"},
                                                  what=f"creating a Message Batch (POST {BATCHES})"))
        finally:
            for f in opened:
                f.close()

    async def find(self, lines: int, since: float, known: set[str]) -> list[Remote]:
        """The batches that may be the one a create sent at `since` made: created since a little before it,
        holding `lines` requests, not being cancelled, and none of the `known` ids (the run's other parts)."""
        found: list[Remote] = []
        after = None
        while True:
            params = {"limit": "100", **({"after_id": after} if after else {})}
            page = await self.client.json("GET", BATCHES, params=params,
                                          what=f"listing the Message Batches (GET {BATCHES})")
            data = page.get("data") if isinstance(page, dict) else None
            for obj in data or []:
                remote = _remote(obj)
                if remote.created_at and remote.created_at < since - LOOK_BACK_S:
                    return found  # newest first: the rest are older than the create
                if remote.id not in known and remote.total == lines and not remote.metadata["cancelling"]:
                    found.append(remote)
            if not data or not page.get("has_more"):
                return found
            after = page.get("last_id") or data[-1].get("id")

    async def get(self, batch_id: str) -> Remote:
        return _remote(await self.client.json("GET", f"{BATCHES}/{batch_id}",
                                              what=f"polling Message Batch {batch_id} (GET {BATCHES}/{{id}})"))

    async def cancel(self, batch_id: str) -> Remote:
        return _remote(await self.client.json(
            "POST", f"{BATCHES}/{batch_id}/cancel",
            what=f"cancelling Message Batch {batch_id} (POST {BATCHES}/{{id}}/cancel)"))

    async def results(self, remote: Remote, sink: IO[bytes]) -> None:
        """The results JSONL into `sink`: from `results_url` when it is on the base URL's host (the key goes
        nowhere else), else from the results path under the base URL."""
        path = f"{BATCHES}/{remote.id}/results"
        url = remote.results_url
        if url is not None and URL(url).origin() == URL(self.client.url(path)).origin():
            path = url
        await self.client.download(path, sink, what=f"downloading the results of {remote.id} (GET {BATCHES}/"
                                   "{id}/results)")

    @staticmethod
    def outcome(line: Any) -> Outcome:
        """One results line; ValueError when it is not one."""
        if not isinstance(line, dict) or not isinstance(line.get("custom_id"), str):
            raise ValueError("not a Message Batches result line (no custom_id)")
        given = line.get("result")
        result = json_object(given)
        word = result.get("type")
        kind = _KINDS.get(word) if isinstance(word, str) else None  # a list or object is no key: no TypeError
        if kind is None:
            raise ValueError(f"an unknown result {str(given)[:100]}")
        cid = line["custom_id"]
        if kind == SUCCEEDED:
            message = result.get("message")
            if not isinstance(message, dict):
                raise ValueError("a succeeded result without its message")
            rid = message.get("id") if isinstance(message.get("id"), str) else None
            return Outcome(cid, SUCCEEDED, message, 200, request_id=rid)
        if kind == ERRORED:
            response = json_object(result.get("error"))
            inner = response.get("error")
            error = inner if isinstance(inner, dict) else response
            code, message = error.get("type"), error.get("message")
            return Outcome(cid, ERRORED, None, None, code if isinstance(code, str) else None,
                           message if isinstance(message, str) else None,
                           response.get("request_id") if isinstance(response.get("request_id"), str) else None)
        return Outcome(cid, kind)
