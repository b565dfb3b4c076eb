"""The Python API: `streamrun.stream` and `streamrun.run`, for notebooks and pipelines.

Why it is thin: a run from Python is the same run as from the command line
(`runner.run.run_document`), with the same `RunConfig`, the same output file
with its resume and crash guarantees, and the same summary.  The CLI calls
`run` too (`runner.cli.main.start`), so this API cannot drift from it.

Options are the job-file keys (docs/cli.md, "Job-file keys"), as keyword arguments::

    summary = streamrun.run("prompts.jsonl", output="results.jsonl", base_url="http://127.0.0.1:8000/v1",
                            concurrency=8, params={"max_tokens": 64})

    async for record in streamrun.stream([{"messages": [...]}], base_url=..., concurrency=8):
        print(record.custom_id, record.text)

Inputs are file paths (or globs), or dicts (input lines), which are written
to a temporary JSONL file first so the run streams them like any file.

What they raise before the run starts (all but the first two are
`streamrun.RunError`, whose `exit_code` is the CLI's for the same failure):

- `TypeError`: a wrong call (no `output=`, `config=` beside options or inputs);
- `RuntimeError`: `run()` called inside a running event loop (use `await arun(...)`);
- `UsageError` (2): a bad option or value, an input, output or cache file
  that cannot be used, no API key; `OutputExists` (2) is one: the output has
  records and neither `resume=True` nor `overwrite=True` was passed;
- `OutputLocked` (3): another run is writing the output.

A run that started returns its summary, even one that failed: `exit_code`
1 (failures over budget), 2 (stopped: the server refused the first answers,
no model), 4 (the output could not be written), 5, or 130/143 (a signal).
Signals: the first SIGINT or SIGTERM drains the run (no new requests; it
returns with 130/143) and puts the caller's own handlers back, so a second
one does what the caller set up (by default KeyboardInterrupt is raised in
the caller; in a notebook the cell is interrupted), never ends the process.
The caller's handlers are back after every run.  (The CLI passes `cli=True`:
its messages name flags, and a second signal exits the process at once.)
"""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import orjson

from .aio import loop_factory
from .config.jobfile import config_from_mapping
from .config.run_config import RunConfig
from .record import Record
from .run import run_document

__all__ = ["config", "run", "arun", "stream", "RunConfig", "Record"]

Inputs = str | os.PathLike | Iterable[Any]


def config(inputs: Inputs = (), *, output: str | os.PathLike, **options: Any) -> RunConfig:
    """A RunConfig from job-file keys; a bad key or value raises UsageError naming it (as a job file would)."""
    paths = [os.fspath(inputs)] if isinstance(inputs, (str, os.PathLike)) else [os.fspath(p) for p in inputs]
    doc = {"inputs": paths, "output": os.fspath(output), **options}
    return config_from_mapping(doc, "streamrun.config()", os.getcwd())


def run(inputs: Inputs = (), *, config: RunConfig | None = None, mock: Any = None, progress: bool = False,
        cli: bool = False, **options: Any) -> dict:
    """Run to the end and return the summary document (`exit_code` in it), writing the output as the CLI does.

    Blocking; from inside a running event loop (a notebook cell) it raises
    RuntimeError at once: use `await streamrun.arun(...)` or
    `streamrun.stream` there.  A run that cannot start (a bad option, an
    existing or locked output, no key) raises `RunError`, whose `exit_code`
    is the CLI's; the module docstring lists every exception and what
    SIGINT/SIGTERM do.  `cli=True` is how the command line runs it: its
    messages name flags (`--resume`), and a second signal exits the process.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop running: the caller blocks here, as it should
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(arun(inputs, config=config, mock=mock, progress=progress, cli=cli, **options))
    raise RuntimeError("streamrun.run() blocks, so it cannot run inside a running event loop (a notebook cell, "
                       "an async function): use `await streamrun.arun(...)` there, with the same arguments")


async def arun(inputs: Inputs = (), *, config: RunConfig | None = None, mock: Any = None, progress: bool = False,
               cli: bool = False, **options: Any) -> dict:
    """`run` for a caller that has an event loop already: `await streamrun.arun(...)` in a notebook."""
    _one_source(inputs, config, options)
    with _as_files(inputs) as paths:
        cfg = config if config is not None else _config(paths, options)
        if cfg.batch.enabled:  # batch=True: through the provider's Batch API, as `streamrun batch` (docs/batch.md)
            from .batchapi.driver import run_batch

            return await run_batch(cfg, mock=_mock(mock))
        return await run_document(cfg, mock=_mock(mock), show_progress=progress, cli=cli)


async def stream(inputs: Inputs = (), *, config: RunConfig | None = None, mock: Any = None,
                 **options: Any) -> AsyncIterator[Record]:
    """Each record as it is written, in completion order; the output goes to `output` (a temporary file if none).

    Leaving the loop early stops the run: requests in flight are cancelled
    and what was written stays written (a rerun with `resume=True` goes on).
    Raises as `run` does (the module docstring), from the loop.
    """
    _one_source(inputs, config, options)
    queue: asyncio.Queue = asyncio.Queue()
    done = object()
    with _as_files(inputs) as paths, tempfile.TemporaryDirectory(prefix="streamrun-") as tmp:
        if config is None:
            options.setdefault("output", os.path.join(tmp, "results.jsonl"))
            config = _config(paths, options)
        task = asyncio.ensure_future(run_document(config, mock=_mock(mock), show_progress=False,
                                                  on_record=queue.put_nowait))
        task.add_done_callback(lambda _: queue.put_nowait(done))
        try:
            while (record := await queue.get()) is not done:
                yield record
            task.result()  # a run that could not start raises here
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


def _one_source(inputs: Inputs, config: RunConfig | None, options: dict) -> None:
    """A RunConfig holds its own inputs and options: given one, inputs or options beside it would be ignored."""
    if config is not None and (options or (inputs != () and inputs is not None)):
        raise TypeError("pass either config=RunConfig(...) or inputs and options, not both")


def _config(paths: list[str], options: dict) -> RunConfig:
    if "output" not in options:
        raise TypeError("streamrun.run() needs output=PATH (where the records go)")
    output = options.pop("output")
    return config(paths, output=output, **options)


def _mock(mock: Any):
    """`mock=True`: the embedded mock server with its defaults; a MockConfig: that one."""
    if mock is True:
        from .mock import MockConfig

        return MockConfig()
    return mock or None


@contextmanager
def _as_files(inputs: Inputs) -> Iterator[list[str]]:
    """Paths as given; input lines (dicts, any iterable of them) written to a temporary JSONL file, one at a time."""
    if isinstance(inputs, (str, os.PathLike)):
        yield [os.fspath(inputs)]
        return
    lines = iter(inputs)
    first = next(lines, None)
    if first is None or isinstance(first, (str, os.PathLike)):
        rest = list(lines)
        if not all(isinstance(p, (str, os.PathLike)) for p in rest):
            raise TypeError("inputs are either paths or input lines (dicts), not both")
        yield [os.fspath(p) for p in ([first] if first is not None else []) + rest]
        return
    with tempfile.TemporaryDirectory(prefix="streamrun-inputs-") as tmp:
        path = os.path.join(tmp, "inputs.jsonl")
        with open(path, "wb") as f:
            for line in itertools.chain([first], lines):
                if not isinstance(line, dict):
                    raise TypeError(f"an input line must be a dict, not {type(line).__name__}")
                f.write(orjson.dumps(line) + b"\n")
        yield [path]
