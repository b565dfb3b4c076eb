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
    plan      input lines -> wire requests (the live translation, no stream), parts within the limits
    state     the state file: the run's id, its parts with their file and batch ids, written atomically
    http      one client for the providers' JSON calls: retries, typed ProviderError, no key in messages
    openai    OpenAI's Files and Batch API: upload, create, get, cancel, list, results (typed)
    anthropic Anthropic's Message Batches: create, get, cancel, list, results (typed)
    collect   a batch's results -> one record per line (runner/engine/send.py's make_record)
    driver    the command: lock, scan, plan, submit, poll, collect, cancel, summary, exit code
"""
