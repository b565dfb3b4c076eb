"""The providers' Batch APIs behind one command: `streamrun batch` (and a job's `batch = true`).

Why a package beside the engine: a batch run sends nothing live.  Its input
lines become the requests of OpenAI's Batch API or Anthropic's Message
Batches, which answer within 24 hours at half the price; the answers come
back as the same records `run` writes, in the same output, under the same
failure budget and summary.  What it must never do is pay twice: every id
goes into a state file beside the output before the next step, every batch
names its run, and a rerun finds what a crash left half done before
submitting anything.

The modules, in the order a run meets them::

    settings  BatchSettings: the batch options (RunConfig's `batch` group), each provider's limits and price
    state     the state file: the run's id, its parts with their file and batch ids, written atomically
    output    what the output holds already; its records written and fsynced before the state says so
    lines     the input lines, read again by each step and checked against the parts' fingerprints
    plan      input lines -> wire requests (the live translation, no stream), parts within the limits
    http      one client for the providers' JSON calls: retries, typed ProviderError, no key in messages
    openai    OpenAI's Files and Batch API: upload, create, get, cancel, list, results (typed)
    anthropic Anthropic's Message Batches: create, get, cancel, list, results (typed)
    remote    what those calls give back, typed: a batch as last seen, one line's outcome
    submit    plan the lines into parts, find what a crash left unknown, submit each part once, cancel
    poll      wait for the batches, collect each that ended
    collect   a batch's results -> one record per line (runner/engine/send.py's make_record)
    summary   the summary document (run's, with a `batch` section) and the exit code
    signals   SIGINT/SIGTERM: stop after the step in progress
    driver    the command: lock, scan, then each step above in order
"""
