"""Which result files make one run, and what each run is called.

``streamrun report a.jsonl b.jsonl`` compares runs; pooling them into one
set of stages (the old behaviour, still there with ``--pool``) mixed two
servers' numbers without a word. A run is named by the ``label`` its
summary sidecar holds (``<base>.summary.json``, written by ``streamrun run
--label TEXT``), else by its file name without ``.jsonl``.

Files whose sidecars carry the same label are one run (the shards of one
labelled job): they are pooled, and a note on stderr says so. Names taken
from file names never pool: two ``out.jsonl`` in different folders are told
apart by their folder, then by a number.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from runner.outputs.summary import sidecar_path

# A sidecar is a few kB; one larger than this is not a summary and is not read.
_MAX_SIDECAR_BYTES = 16 * 1024 * 1024


@dataclass
class RunFiles:
    """One run of a comparison: its label and the files that hold it."""

    label: str
    paths: list[str] = field(default_factory=list)
    from_sidecar: bool = False  # the label came from a summary sidecar (else from the file name)


def read_sidecar(path: str) -> dict | None:
    """The run summary beside the results file ``path`` (``<base>.summary.json``), if there is one."""
    side = Path(sidecar_path(str(path)))
    try:
        if not side.is_file() or side.stat().st_size > _MAX_SIDECAR_BYTES:
            return None
        doc = orjson.loads(side.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    return doc if isinstance(doc, dict) else None


def sidecar_label(path: str) -> str | None:
    """The ``label`` of the summary beside ``path``, if there is one."""
    doc = read_sidecar(path)
    label = doc.get("label") if doc is not None else None
    return label.strip() if isinstance(label, str) and label.strip() else None


def file_name(path: str) -> str:
    """``results/a.jsonl`` -> ``a``: how a run without a label is called."""
    name = Path(path).name
    return name[:-6] if name.endswith(".jsonl") and len(name) > 6 else name


def group_runs(paths: Sequence[str], warn: Callable[[str], None]) -> list[RunFiles]:
    """The runs of ``paths``, in the order their first file is given."""
    runs: dict[str, RunFiles] = {}
    unlabelled: list[str] = []
    order: list[tuple[str, str | None]] = []  # (path, sidecar label) as given
    for path in paths:
        order.append((path, sidecar_label(path)))
    for path, label in order:
        if label is not None:
            run = runs.get(label)
            if run is None:
                runs[label] = RunFiles(label, [path], from_sidecar=True)
            else:
                run.paths.append(path)
    for label, run in runs.items():
        if len(run.paths) > 1:
            warn(f"note: {', '.join(run.paths)} share the label {label!r}: reported as one run "
                 "(give each run its own --label to compare them)")
    names = _distinct([p for p, label in order if label is None], taken=set(runs))
    out: list[RunFiles] = []
    seen: set[str] = set()
    for path, label in order:
        if label is None:
            out.append(RunFiles(names[len(unlabelled)], [path]))
            unlabelled.append(path)
        elif label not in seen:
            seen.add(label)
            out.append(runs[label])
    return out


def _distinct(paths: list[str], taken: set[str]) -> list[str]:
    """File names as labels, told apart by their folder, then a number, when they collide."""
    names = [file_name(p) for p in paths]
    counts = {n: names.count(n) for n in names}
    out = []
    for path, name in zip(paths, names, strict=True):
        if counts[name] > 1 or name in taken:
            parent = Path(path).resolve().parent.name
            name = f"{parent}/{name}" if parent else name
        base, k = name, 2
        while name in taken:
            name = f"{base}#{k}"
            k += 1
        taken.add(name)
        out.append(name)
    return out


def pooled(paths: Sequence[str]) -> RunFiles:
    """Every file as one run (``--pool``, or a single file), named like its first file."""
    if not paths:
        return RunFiles("", [])
    label = sidecar_label(paths[0])
    return RunFiles(label or file_name(paths[0]), list(paths), from_sidecar=label is not None)
