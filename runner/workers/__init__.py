"""--workers N: several processes send the requests of one run.

Why: one Python process parses SSE events and JSON on one core; a fast
server streaming to many clients keeps that core busy before the network
is.  The cut is simple to state: **the parent reads the inputs and writes
the records; workers only send.**  So there is still one output file (one
writer, flush per record, resume and crash safety as before), one summary
with exact statistics and one progress display.

    parent (runner.run.Run, with pool.WorkerPool as its engine)
      inputs ─► plan/resume filter ─► feed ──ITEM──► worker 0 .. N-1 (child.py)
                                                      Engine (unchanged) ─► HTTP
      writer + stats + progress ◄────────RECORD──────┘

- `wire.py`    what goes over the socket pairs (frames, kinds, codecs)
- `shapes.py`  how a run's load splits over workers (concurrency, rate, seeds), pure
- `handle.py`  one worker process as the parent sees it (spawn, read, death)
- `pool.py`    the parent's engine: stages as phases across workers, feeding, records
- `child.py`   a worker's main: the unchanged Engine fed from the socket
- `quota.py`   one RPM/TPM budget for all workers: the parent's limiter grants
"""
