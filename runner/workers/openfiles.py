"""The open-file limit: raised to what the run's connections need, else the connections capped to fit.

Why: every connection is a file descriptor, and the soft limit is often
1024 (256 on macOS) where the hard one allows far more.  `-c 1000` over a
low soft limit made prompts fail with EMFILE ("Too many open files") as
connect_error records.  Raising the soft limit is what `ulimit -n` would do
(it lasts for this process, and the worker processes it starts inherit
it); where even the hard limit is too low, fewer connections than -c cost
time (the requests wait their turn, in queue_s), never prompts, and the
warning says so.
"""

from __future__ import annotations

import logging

from ..config.run_config import LoadConfig

log = logging.getLogger("streamrun")

# Descriptors a process holds besides its connections: stdio, the event loop, the output and its lock,
# the inputs, the response cache, --server-metrics scrapes (measured: 11 in all at -c 1).
RESERVE = 32
PER_WORKER = 2  # the parent's socket to each worker process, and the process itself


def fit_connections(load: LoadConfig, *, in_process_server: bool = False) -> int | None:
    """Connections each sending process may open at once: None for all it needs (-c, or its --workers
    share), or fewer when the open-file limit cannot be raised that far (said in one warning).

    `in_process_server`: the embedded mock runs in this process and holds the
    other end of every connection, two descriptors each.
    """
    try:
        import resource
    except ImportError:  # no setrlimit here (Windows): nothing to raise
        return None
    from .shapes import share

    total, workers = load.max_concurrency, load.workers
    wanted = total if workers == 1 else share(total, workers, 0)  # the first worker has the largest share
    if workers == 1:
        need = RESERVE + total * (2 if in_process_server else 1)
    else:  # each worker its share; this process its workers, and with --mock the server's end of every one
        need = max(RESERVE + wanted, RESERVE + PER_WORKER * workers + (total if in_process_server else 0))
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return None
    if soft == resource.RLIM_INFINITY or soft >= need:
        return None
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        limit = target
    except (OSError, ValueError):
        limit = soft
    if limit >= need:
        log.debug("open-file limit raised from %d to %d for -c %d", soft, limit, total)
        return None
    if workers == 1:
        fits = (limit - RESERVE) // (2 if in_process_server else 1)
    else:
        fits = limit - RESERVE
        if in_process_server:
            fits = min(fits, (limit - RESERVE - PER_WORKER * workers) // workers)
    fits = max(1, fits)
    if fits >= wanted:
        return None
    shown = "unlimited" if hard == resource.RLIM_INFINITY else str(hard)
    log.warning("-c %d needs about %d open files, but this process may open at most %d (ulimit -n; hard limit "
                "%s): at most %d connections at once%s; the other requests wait their turn", total, need, limit,
                shown, fits, " per worker" if workers > 1 else "")
    return fits
