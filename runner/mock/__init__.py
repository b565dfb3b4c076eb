"""Embedded mock of an OpenAI-compatible streaming server (aiohttp.web).

Why it exists: ``make run`` needs an endpoint without an API key or a
network, the tests need one whose faults they can script, and the
benchmarks need one that can push thousands of concurrent streams without
itself being the bottleneck, with timing precise enough to check the
client's latency measurements against.  It refuses what real servers
refuse (see ``validate``): a test that passes only against a lenient mock
proves nothing about vLLM or the OpenAI API.

The package, in the order a request meets it::

    config    MockConfig, ScriptEntry, load_script: how it behaves
    server    serve / run_server / the `streamrun mock` command: hosting
    app       routes and the completion handler: 401, validation, faults,
              quotas, then the reply (streamed or JSON)
    request   the body parsed and measured (prompt tokens, reply seed)
    validate  the real servers' refusals (422 / 400 / 404)
    state     counters, quota buckets, fault and script choices
    frames    reply text, event schedule and SSE byte templates

What it serves
    ``POST /v1/chat/completions`` and ``POST /v1/completions`` (an SSE
    stream when the body has ``"stream": true``, else one JSON object),
    ``GET /v1/models`` (``model`` and ``aliases``), ``GET /mock/stats``
    (counters) and ``POST /mock/reset``.

Stream shape (byte-for-byte what OpenAI sends; chat shown)::

    data: {"id":...,"object":"chat.completion.chunk",...,"choices":[{"index":0,"delta":{"role":"assistant","content":""},...}]}
    data: {... "delta":{"content":" word"} ...}        x N events
    data: {... "delta":{},"logprobs":null,"finish_reason":"stop"}]}
    data: {... "choices":[],"usage":{...}}              only with stream_options.include_usage
    data: [DONE]

``/v1/completions`` streams carry ``choices[0].text`` and, like OpenAI's
legacy endpoint, have no role chunk.  With ``include_usage`` every other
chunk also carries ``"usage":null``, as OpenAI's do.

Timing
    The role chunk goes out as soon as the request arrives (so a client's
    time-to-first-byte and time-to-first-token differ by ``ttft``).  Content
    event ``j`` is due at ``t0 + ttft + j * tokens_per_chunk / tokens_per_s``,
    ``t0`` being the time when the handler started: every target is
    absolute, so sleep overshoot never accumulates.  Events already due are
    written together in one write (only when there is nothing to wait for),
    anything due later is flushed before sleeping, so the client sees the
    real gaps.  The finish/usage/[DONE] chunks follow the last content event
    without delay.

Text and token counts
    Tokens are words from a fixed list (including multi-byte UTF-8, a
    quoted word and a newline, to exercise clients' decoding), picked by a
    walk seeded by the CRC32 of the prompt text: the same prompt always
    gets the same text.  ``prompt_tokens`` uses the same chars/4 cookbook
    estimate as the client's fallback (``runner.tokens`` without tiktoken),
    so TPM quota tests agree with the client's own accounting; the context
    window check uses it too.

Faults (see ``MockConfig`` and the ``"mock"`` request-body field)
    Per-request scripted faults keyed by ``body["mock"]["key"]``; seeded
    random 500/429/drop rates; RPM/TPM quotas (``state``); an API key
    check.  The API key is checked first, then the request is validated,
    and only a valid request reaches fault injection and quota accounting.
"""

from .app import build_app
from .config import MockConfig, ScriptEntry, load_script
from .request import prompt_tokens_estimate
from .server import mock_command, run_server, serve
from .state import FAULTS, STATE_KEY, MockState, MockStats, format_reset

__all__ = [
    "MockConfig",
    "ScriptEntry",
    "MockStats",
    "MockState",
    "STATE_KEY",
    "FAULTS",
    "build_app",
    "serve",
    "run_server",
    "load_script",
    "mock_command",
    "prompt_tokens_estimate",
    "format_reset",
]
