"""The output a batch run writes: what it holds already, and its records written before the state says so.

Why apart: the output is read once at the start (which lines have their
final record, which failed, which records each batch wrote) and written
by every later step, always in the crash model's order: a record is
written and fsynced (`Records.flush`) before the state file marks its part
collected, so that a rerun after `kill -9` writes no line twice.
"""

from __future__ import annotations

import logging
import os
from array import array
from dataclasses import dataclass, field

from ..config.run_config import OutputConfig
from ..errors import OutputFailed, UsageError
from ..inputs.ids import HashSorter, id_hash, sorted_has
from ..outputs.finals import FinalRecords
from ..outputs.writer import ResultWriter, repair_torn_tail
from ..record import Record
from .state import SUBMITTED, SUBMITTING, State, load_state, remove_state, shown_ids

log = logging.getLogger("streamrun")


@dataclass
class Found:
    """What the output holds: the keys of its final records, those that failed, and the records each batch wrote."""

    final: array = field(default_factory=lambda: array("Q"))
    failed: array = field(default_factory=lambda: array("Q"))
    written: array = field(default_factory=lambda: array("Q"))  # custom_id + batch_id hashes: every batch record

    def has_final(self, custom_id: str) -> bool:
        return sorted_has(self.final, id_hash(custom_id))

    def has_failed(self, custom_id: str) -> bool:
        return sorted_has(self.failed, id_hash(custom_id))

    def wrote(self, custom_id: str, batch_id: str) -> bool:
        """Whether a collection the last run did not finish wrote this line's record of this batch already."""
        return sorted_has(self.written, id_hash(custom_id + "\0" + batch_id))


def prepare_output(output: OutputConfig, state_path: str) -> tuple[State | None, Found]:
    """The state file's run (None: none yet) and what the output holds; --overwrite starts both afresh.

    UsageError for an output with records and no state file (not a batch run's), or an --overwrite that
    would lose batches not yet collected."""
    state = load_state(state_path)
    has_records = os.path.exists(output.path) and os.path.getsize(output.path) > 0
    if output.overwrite:
        running = [p for p in state.parts if p.step in (SUBMITTING, SUBMITTED)] if state else []
        if running:
            raise UsageError(f"{state_path} has batches not yet collected ({shown_ids(running)}): --overwrite "
                             "would lose them and submit their lines again; --cancel them (or let them end) first")
        remove_state(state_path)
        if os.path.exists(output.path):
            os.truncate(output.path, 0)
        return None, Found()
    if state is None and has_records:
        raise UsageError(f"{output.path} already exists and has no batch state file ({state_path}): pass "
                         "--overwrite to replace it, or choose another -o")
    if os.path.exists(output.path):
        cut = repair_torn_tail(output.path)
        if cut:
            log.warning("%s: cut a torn last line (%d bytes) left by an interrupted run", output.path, cut)
    return state, read_found(output.path) if has_records else Found()


def read_found(path: str) -> Found:
    final, failed, written = HashSorter(), HashSorter(), HashSorter()
    with FinalRecords(path, warn=log.warning, verb="unreadable record skipped: ") as records:
        for number, _, record, final_line in records.every():
            if record.batch_id is not None:
                written.add(id_hash(record.custom_id + "\0" + record.batch_id))
            if final_line == number and not record.warmup:
                final.add(id_hash(record.custom_id))
                if not record.ok:
                    failed.add(id_hash(record.custom_id))
    return Found(final.sorted(), failed.sorted(), written.sorted())


class Records:
    """The output's one writer for this invocation: `put` queues a record, `flush` writes and fsyncs them."""

    def __init__(self, output: OutputConfig) -> None:
        self.path = output.path
        self.fd = os.open(output.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        encode = None
        if output.format == "openai-batch":
            from ..outputs.batch import encode_batch

            encode = encode_batch
        self.writer = ResultWriter(self.fd, output.fsync, encode, name=output.path)
        self.written = 0

    def put(self, record: Record) -> None:
        self.writer.put(record)
        self.written += 1

    def flush(self) -> None:
        """What is queued, written and fsynced (before the state says it is: the crash model's order)."""
        writer = self.writer
        if not writer.pending:
            return
        try:
            writer.flush_now()
            if writer.fsync.mode != "never":
                os.fsync(writer.fd)
        except OSError as exc:
            raise OutputFailed(f"cannot write {self.path}: {exc.strerror or exc}; the state file keeps the "
                               "batches: the same command collects them again") from None

    def close(self) -> None:
        os.close(self.fd)
