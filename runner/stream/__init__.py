"""The reusable core: one streamed request, from bytes on the wire to text, usage and timings.

sse (bytes to events, WHATWG rules) -> protocol (events to text, usage, typed
errors; request bodies out) -> client (one request over a shared aiohttp
session: headers, send, stamp times) -> retry (which failures retry, how long
to wait).  Nothing here knows files, the CLI, or the run around it.
"""
