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
    request   the body parsed and measured (prompt tokens, reply seed, n,
              logprobs)
    validate  the real servers' refusals (422 / 400 / 404)
    state     counters, quota buckets, fault and script choices
    frames    reply text, choices, logprobs, event schedule and SSE byte
              templates

and, for the named-event APIs (``app`` registers their routes)::

    responses  /v1/responses: OpenAI's Responses API (checks, errors, events)
    anthropic  /v1/messages: Anthropic's Messages API (checks, errors, events)
    endpoint   the order both run a request through (as ``app``'s)
    plan       their request facts and the reply's length (reasoning, text)
    send       writing a reply: paced SSE stream, held JSON reply, refusal,
               cut connection

What it serves
    ``POST /v1/chat/completions`` and ``POST /v1/completions`` (an SSE
    stream when the body has ``"stream": true``, else one JSON object),
    ``POST /v1/responses`` (OpenAI's Responses API) and ``POST
    /v1/messages`` (Anthropic's Messages API), each with its own named
    events, error shape and checks, reasoning / thinking when asked (see
    ``responses``, ``anthropic``), ``GET /v1/models`` (``model`` and
    ``aliases``), ``GET /metrics`` (Prometheus text, vLLM's names: ``metrics``),
    ``GET /mock/stats`` (counters), ``GET /mock/traceparents`` (the W3C
    ``traceparent`` headers received, the latest 10,000) and ``POST /mock/reset``;
    for ``streamrun batch``, OpenAI's Files and Batch API (``batches``) and
    Anthropic's Message Batches (``message_batches``), whose lines
    ``batch_jobs`` answers through the endpoints above.

Stream shape (byte-for-byte what OpenAI sends; chat shown)::

    data: {"id":...,"object":"chat.completion.chunk",...,"choices":[{"index":0,"delta":{"role":"assistant","content":""},...}]}
    data: {... "delta":{"content":" word"} ...}        x N events
    data: {... "delta":{},"logprobs":null,"finish_reason":"stop"}]}
    data: {... "choices":[],"usage":{...}}              only with stream_options.include_usage
    data: [DONE]

``/v1/completions`` streams carry ``choices[0].text`` and, like OpenAI's
legacy endpoint, have no role chunk.  With ``include_usage`` every other
chunk also carries ``"usage":null``, as OpenAI's do.

Choices and logprobs (chat and completions)
    ``n`` (1..8; more is refused with a 400) asks for that many choices.
    Choice 0 is the reply without ``n``; each other choice has a text of
    its own and may end up to a quarter shorter (then ``"stop"``), never
    longer.  Streamed, chat sends a role chunk per choice, then content
    event ``j`` of every choice still that long, one choice per chunk in
    index order (as vLLM interleaves them), then a finish chunk per choice;
    usage counts completion tokens over all choices.  Chat's ``logprobs: true`` (``top_logprobs`` 0..20, only with
    it) puts ``logprobs.content`` entries (``token``, ``logprob``,
    ``bytes``, ``top_logprobs``) in every content chunk; completions'
    ``logprobs`` (0..5) puts ``tokens``, ``token_logprobs``,
    ``top_logprobs`` and ``text_offset`` there.  The values are fake but
    deterministic: the chosen token's logprob in [-2.5, -0.001], always
    among the alternatives listed.  A JSON reply carries the same choices
    and logprobs whole.  One choice without logprobs keeps the pre-built
    templates' fast path (``frames``), its bytes those of a plain reply.

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
    estimate as the client's fallback (``runner.inputs.tokens`` without tiktoken),
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
from .server import run_server, serve
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
    "prompt_tokens_estimate",
    "format_reset",
]
