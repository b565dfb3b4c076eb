"""The providers' JSON calls over one session: retries where they are safe, typed failures, no key in a message.

Why apart from the stream client: these are plain JSON calls (upload,
create, get, list, cancel, download), and some of them cost money once
they arrive.  A call that only reads (or cancels) is retried on every
passing failure (429, 5xx, a dropped connection, a timeout) with the run's
retry policy.  A call that creates something is retried only when it
surely did not arrive (no connection was made, or a 429); any other
failure of it is `Unsure`: the caller lists what exists before it tries
again, so that a batch is never created twice.

What fails for good is a `ProviderError` (exit 2), its message redacted:
the state file keeps every id, and the same command continues.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import IO, Any

import aiohttp
import orjson

from ..errors import RunError
from ..stream.client import connect_failure, endpoint_url, read_bounded, status_error
from ..stream.config import RetryPolicy
from ..stream.errors import HTTPStatusError, RequestError, redact
from ..stream.retry import call_with_retries

MAX_JSON_BYTES = 64 * 1024 * 1024  # a JSON answer (a batch object, a page of a list)
CHUNK = 1 << 20


class ProviderError(RunError):
    """A Batch API call refused, or failed past its retries (exit 2); the state file keeps what was done."""


class Unsure(ProviderError):
    """A call that creates something failed after it may have arrived: whether it did must be looked up."""


class _Broken(RequestError):
    """The connection failed after the request went out (reset, timeout): it may have arrived."""

    type = "connect_error"


class Client:
    """One provider's base URL, headers and retries, over a shared session."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, headers: Mapping[str, str],
                 secrets: tuple[str, ...], policy: RetryPolicy, proxy: str | None = None) -> None:
        self.session = session
        self.base_url = base_url
        self.headers = dict(headers)
        self.secrets = secrets
        self.policy = policy
        self.proxy = proxy

    def url(self, path: str) -> str:
        """An absolute URL as it is; an API path (`/v1/batches`) under the base URL."""
        return path if "://" in path else endpoint_url(self.base_url, path)

    async def json(self, method: str, path: str, *, what: str, body: Any = None,
                   data: Callable[[], Any] | None = None, params: Mapping[str, str] | None = None,
                   headers: Mapping[str, str] | None = None, creates: bool = False) -> Any:
        """The JSON answer of one call; `data()` makes a fresh body for each attempt (a form, a file).

        `creates`: the call creates something (see the module's docstring)."""
        async def attempt() -> Any:
            sent = orjson.dumps(body) if body is not None else data() if data is not None else None
            extra = {"Content-Type": "application/json"} if body is not None else {}
            raw = await self._send(method, path, sent, params, {**extra, **(headers or {})}, creates)
            try:
                return orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise ProviderError(f"{what}: the answer is not JSON: {raw[:200]!r}") from None

        return await self._retried(attempt, what, creates)

    async def download(self, path: str, sink: IO[bytes], *, what: str) -> None:
        """A file's bytes into `sink` (a temporary file: results can be far larger than memory should hold)."""
        async def attempt() -> None:
            sink.seek(0)
            sink.truncate()
            try:
                async with self.session.get(self.url(path), headers={**self.headers, "Accept": "*/*"},
                                            proxy=self.proxy) as resp:
                    if resp.status >= 400:
                        raise status_error(resp.status, await resp.content.read(65536), resp.headers)
                    async for chunk in resp.content.iter_chunked(CHUNK):
                        sink.write(chunk)
            except aiohttp.ClientConnectorError as exc:
                raise _no_connection(exc) from exc
            except (aiohttp.ClientError, TimeoutError) as exc:
                raise _Broken(f"the download broke off: {type(exc).__name__}: {exc}", retryable=True) from exc

        await self._retried(attempt, what, creates=False)
        sink.flush()

    async def _send(self, method: str, path: str, data: Any, params: Mapping[str, str] | None,
                    headers: Mapping[str, str], creates: bool) -> bytes:
        try:
            async with self.session.request(method, self.url(path), data=data, params=params, proxy=self.proxy,
                                            headers={**self.headers, "Accept": "application/json", **headers}) as resp:
                if resp.status >= 400:
                    error = status_error(resp.status, await resp.content.read(65536), resp.headers)
                    if creates and resp.status != 429:
                        error.retryable = False  # it may have been acted on: looked up, not sent again
                        error.unsure = resp.status >= 500  # type: ignore[attr-defined]
                    raise error
                return await read_bounded(resp.content, MAX_JSON_BYTES)
        except aiohttp.ClientConnectorError as exc:  # no connection: nothing arrived
            raise _no_connection(exc) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise _Broken(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__,
                          retryable=not creates) from exc

    async def _retried(self, attempt: Callable[[], Any], what: str, creates: bool) -> Any:
        try:
            return await call_with_retries(self.policy, attempt)
        except RequestError as exc:
            message = redact(f"{what}: {exc.message}", self.secrets)
            if creates and (isinstance(exc, _Broken) or getattr(exc, "unsure", False)):
                raise Unsure(message) from None
            if isinstance(exc, HTTPStatusError) and exc.status_code in (401, 403):
                message += ": check the key (and --api-key-env, --api)"
            raise ProviderError(message) from None


def _no_connection(exc: aiohttp.ClientConnectorError) -> RequestError:
    """No connection, in the live client's words (an untrusted certificate names --ca-cert); one that every
    attempt would meet the same way (runner/stream/tls.py) is not tried again."""
    err = connect_failure(exc)
    reason = getattr(err, "reason", None)
    if reason:
        err.message = f"cannot connect: {reason}"
    if getattr(err, "conclusive", False):
        err.retryable = False
    return err
