"""The Python API: `streamrun.stream` and `streamrun.run`, for notebooks and pipelines.

Why it is thin: a run from Python is the same run as from the command line
(`runner.run.run_document`), with the same `RunConfig`, the same output file
with its resume and crash guarantees, and the same summary.  The CLI calls
`run` too (`runner.cli.start`), so this API cannot drift from it.

Options are the job-file keys (docs/cli.md, "Job-file keys"), as keyword arguments::

    summary = streamrun.run("prompts.jsonl", output="results.jsonl", base_url="http://127.0.0.1:8000/v1",
                            concurrency=8, params={"max_tokens": 64})

    async for record in streamrun.stream([{"messages": [...]}], base_url=..., concurrency=8):
        print(record.custom_id, record.text)

Inputs are file paths (or globs), or dicts (input lines), which are written
to a temporary JSONL file first so the run streams them like any file.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
from contextlib import contextmanager
from typing import Any, AsyncIterator, Iterable, Iterator

import orjson

from .aio import loop_factory
from .config import RunConfig
from .jobfile import config_from_mapping
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
        **options: Any) -> dict:
    """Run to the end and return the summary document (`exit_code` in it), writing the output as the CLI does.

    Blocking; from inside a running event loop (a notebook cell), use
    `await streamrun.arun(...)` or `streamrun.stream`.  A run that cannot
    start (a bad option, a locked output, no key) raises `RunError`, whose
    `exit_code` is the CLI's.
    """
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(arun(inputs, config=config, mock=mock, progress=progress, **options))


async def arun(inputs: Inputs = (), *, config: RunConfig | None = None, mock: Any = None, progress: bool = False,
               **options: Any) -> dict:
    """`run` for a caller that has an event loop already."""
    _one_source(inputs, config, options)
    with _as_files(inputs) as paths:
        cfg = config if config is not None else _config(paths, options)
        return await run_document(cfg, mock=_mock(mock), show_progress=progress)


async def stream(inputs: Inputs = (), *, config: RunConfig | None = None, mock: Any = None,
                 **options: Any) -> AsyncIterator[Record]:
    """Each record as it is written, in completion order; the output goes to `output` (a temporary file if none).

    Leaving the loop early stops the run: requests in flight are cancelled
    and what was written stays written (a rerun with `resume=True` goes on).
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
