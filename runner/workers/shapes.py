"""How one run's load splits over N workers: pure arithmetic, tested without processes.

- concurrency: `-c c` gives worker i `c // N`, the remainder one each to the
  first workers (c=3 over 2: 2 + 1); a stage with fewer slots than workers
  (the synchronous stage of `--rate sweep`, c=1) runs on the first c workers;
- rate: each active worker runs its own Poisson process at `rate / active`;
  independent Poisson processes add up to one at the full rate, so the
  server sees the arrivals it would from one process (a ramp splits the
  same way: the sum of the ramped processes is the ramped process);
- seeds: `--seed S` gives each worker a seed of its own derived from S, so
  a run is repeatable for the same N and the workers' streams differ;
- a worker that dies: each later stage splits over the workers left
  (`pool.py`), so the stage still runs at its whole load;
- quotas are not split: the parent grants them (`quota.py`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math

from ..config.run_config import LoadConfig, OutputConfig, RunConfig, Stage


def share(total: int, count: int, index: int) -> int:
    """Worker `index`'s part of `total` slots over `count` workers: c // N, the remainder to the first."""
    return total // count + (1 if index < total % count else 0)


def split_rate(rate: float | None, active: int) -> float | None:
    """Each active worker's arrival rate: None stays closed-loop, inf stays all-at-once."""
    if rate is None or math.isinf(rate):
        return rate
    return rate / active


def ramp_start(load: LoadConfig, count: int) -> float | None:
    """Each of `count` workers' --ramp-up-start: its share of the run's (each ramps its share)."""
    if load.ramp_up is None:
        return load.ramp_up_start
    return (load.ramp_up_start or 1.0) / count


def worker_stage(stage: Stage, index: int, count: int) -> Stage | None:
    """Worker `index`'s share of a stage, None when it sits this stage out (fewer slots than workers).

    The label and index stay the stage's, so records and resume keys do not
    depend on the number of workers.
    """
    slots = share(stage.concurrency, count, index)
    if slots == 0:
        return None
    return Stage(stage.index, slots, split_rate(stage.rate, min(count, stage.concurrency)), stage.label)


def window(concurrency: int) -> int:
    """Items the parent lets one worker hold at once (queued or in flight): enough to keep its
    `concurrency` slots busy while the next items travel, few enough that memory stays flat and a
    worker's death costs little."""
    return 2 * concurrency + 16


def worker_seed(seed: int | None, index: int) -> int | None:
    """A seed of its own per worker (None stays random): the same run repeats for the same N."""
    if seed is None:
        return None
    digest = hashlib.blake2b(f"{seed}/{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def worker_config(cfg: RunConfig, index: int, count: int) -> RunConfig:
    """A worker's own config: its share of the largest stage, its seed, and nothing of what the parent does.

    The parent keeps --num-prompts, resume, the output, the summary and the
    server-metrics scraper; each phase then sets the worker's stage
    (`worker_stage`) and --duration's deadline.  --warmup stays the
    run's total: the parent sends each worker its part, the engine's limit is
    never the one that stops it.
    """
    load = cfg.load
    slots = max(1, share(load.max_concurrency, count, index))
    return dataclasses.replace(
        cfg, output=OutputConfig(), observe=dataclasses.replace(cfg.observe, server_metrics=()),
        load=dataclasses.replace(load, workers=1, stages=(Stage(0, slots),), concurrency=(slots,), rate=(None,),
                                 num_prompts=None, duration_s=None, seed=worker_seed(load.seed, index),
                                 ramp_up_start=ramp_start(load, count)))
