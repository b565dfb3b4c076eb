"""What is known before the first request: the inputs, the shard, what the output holds already, the total.

Why apart from the run: reading the inputs and the existing output ahead
(resume, changed lines, duplicate ids, the progress total) is bookkeeping
that must be right before anything is sent; the run only consumes the Plan.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .config.run_config import RunConfig
from .errors import UsageError
from .inputs.ids import DoneIds, line_hash, resume_key
from .inputs.items import is_regular, iter_items, scan_inputs
from .outputs.writer import HeldRecords, Prior, prepare_resume
from .stream.paths import key_api

if TYPE_CHECKING:  # the statistics are loaded only for a run (make_plan)
    from .stats import StatsAccumulator

log = logging.getLogger("streamrun")

# The end-of-run summary keeps at most this many values per metric (exact up to
# it, a uniform sample beyond), so a run of millions of prompts stays flat in
# memory; `streamrun report` recomputes exact figures from the results file.
SUMMARY_MAX_EXACT = 200_000


@dataclass
class Plan:
    """What is known before the first request: the inputs, the shard, what is done already, the total."""

    paths: list[str]
    owns: Callable[[str], bool] | None
    done: DoneIds | None  # on resume: the final records' ids (per stage)
    total: int | None
    prior: Prior  # what the output held already: --num-prompts and --duration count the whole output
    stats: StatsAccumulator  # already holding the records of earlier runs on resume
    apis: frozenset[str] | None = None  # whose keys the lines need ("openai", "anthropic"); None: not scanned
    held: HeldRecords | None = None  # on resume: failed records this run may supersede, counted at the end



@dataclass
class Matched:
    """The inputs held up against the output's final records on --resume (regular files only)."""

    changed: dict[str, tuple[str, str]] = dataclasses.field(default_factory=dict)  # key -> (id, place)
    done: int = 0  # input lines (x stages) whose final record stays: skipped
    resend: int = 0  # input lines (x stages) whose final record failed: sent again


def _match_inputs(cfg: RunConfig, paths: list[str], owns, done) -> Matched:
    """Which final records answer input lines that changed since, and how many lines are done or sent again.

    A changed line whose final record is a failure that only a changed line
    can change (a fixed malformed line, say) is simply sent again: its new
    record supersedes the old one. Records that answered a line that changed
    otherwise are `changed`: default ids (`file:line`) would answer the wrong
    prompts. Only regular files can be read ahead; a pipe is not checked.
    """
    matched = Matched()
    if not all(is_regular(p) for p in paths):
        return matched
    labels = [s.label for s in cfg.load.stages]
    for item in iter_items(paths, cfg.transport.limits.max_line_bytes):
        if owns is not None and not owns(item.custom_id):
            continue
        request_hash = line_hash(item.raw) if item.raw else None
        for label in labels:
            key = resume_key(label, item.custom_id)
            if request_hash is not None and done.changed(key, request_hash):
                if not cfg.output.keep_failed and done.reopen(key):
                    matched.resend += 1
                    continue
                if item.error is None:  # a line broken since is answered as it stands: invalid
                    matched.changed[key] = (item.custom_id, item.place)
            if key in done:
                matched.done += 1
            elif done.resent(key):
                matched.resend += 1
    return matched



def make_plan(cfg: RunConfig, paths: list[str]) -> Plan:
    """Scan the inputs and the existing output; an unreadable file is a usage error, before anything is sent."""
    from .stats import StatsAccumulator  # noqa: PLC0415  (the summary's module, loaded only for a run)

    output, observe = cfg.output, cfg.observe
    owns = _shard_filter(cfg.shard)
    prior = Prior()
    # the summary covers the whole output, across runs
    stats = StatsAccumulator(max_exact=SUMMARY_MAX_EXACT, percentiles=observe.percentiles, window_s=observe.window_s)

    def earlier(record) -> None:
        prior.add(record)
        stats.add(record)

    def resume(drop=None):
        return prepare_resume(output.path, output.retry_failed and drop is None, log.warning, earlier, drop,
                              keep_failed=output.keep_failed, output_format=output.format,
                              on_held=lambda record: prior.add(record),
                              on_resent=lambda record: prior.add(record, count=False))

    try:
        found = resume() if output.resume and os.path.exists(output.path) else None
        matched = _match_inputs(cfg, paths, owns, found.done) if found is not None and (
            len(found.done) or found.resend) else None
        changed = matched.changed if matched is not None else {}
        if changed and not output.resume_changed:
            places = "; ".join(f"{cid!r} at {place}" for cid, place in list(changed.values())[:5])
            raise UsageError(f"{len(changed)} records answer input lines that have changed since they were sent "
                             f"({places}{' ...' if len(changed) > 5 else ''}): pass --resume-changed to drop "
                             "those records and send the lines again, or restore the inputs")
        if changed:  # drop them, and count again what stays
            prior = Prior()
            stats = StatsAccumulator(max_exact=SUMMARY_MAX_EXACT, percentiles=observe.percentiles,
                                     window_s=observe.window_s)
            found = resume(drop=lambda r: r.key in changed)
            matched = _match_inputs(cfg, paths, owns, found.done)
        total = apis = None
        if all(is_regular(p) for p in paths):  # a pipe would be used up by the scan
            scan = scan_inputs(paths, owns=owns, api=cfg.transport.api, sharegpt=cfg.sharegpt)
            apis = frozenset(key_api(path) for path in scan.paths)
            if scan.duplicates:
                shown = "; ".join(f"{cid!r} at {a} and {b}" for cid, a, b in scan.duplicates[:5])
                more = f" (and {len(scan.duplicates) - 5} more)" if len(scan.duplicates) > 5 else ""
                raise UsageError(f"duplicate custom_id: {shown}{more}")
            num_prompts = cfg.load.num_prompts
            lines = scan.lines if num_prompts is None else min(scan.lines, num_prompts)
            total = max(0, lines * len(cfg.load.stages) - (matched.done if matched is not None else 0))
    except OSError as exc:
        raise UsageError(f"cannot read {exc.filename}: {exc.strerror}") from None
    if found is not None:
        _log_resume(cfg, paths, found, matched, total)
    done = found.done if found is not None else None
    held = found.held if found is not None and len(found.held) else None
    return Plan(paths, owns, done, total, prior, stats, apis=apis, held=held)


def _log_resume(cfg: RunConfig, paths: list[str], found, matched: Matched | None, total: int | None) -> None:
    """One line: what the rerun skips and sends again, or that it has nothing to send."""
    output, n_stages = cfg.output, len(cfg.load.stages)
    if total == 0:
        inputs = paths[0] if len(paths) == 1 else f"{len(paths)} input files"
        stages = f" (x {n_stages} stages)" if n_stages > 1 else ""
        lines = matched.done if matched is not None else len(found.done)
        hint = " (--retry-failed sends them again)" if found.failed else ""
        log.info("nothing to send: all %d lines%s of %s have final records in %s; %d failed%s",
                 lines // n_stages, stages, inputs, output.path, found.failed, hint)
        return
    # the inputs were read ahead only where all are regular files
    ahead = matched if matched is not None and all(is_regular(p) for p in paths) else None
    done = ahead.done if ahead is not None else len(found.done)
    resend = ahead.resend if ahead is not None else found.resend
    if resend:
        log.info("resuming %s: %d records done are skipped, %d failed lines are sent again "
                 "(--keep-failed to keep them)", output.path, done, resend)
    elif done:
        kept = found.failed if output.keep_failed else 0
        log.info("resuming %s: %d records done are skipped%s", output.path, done,
                 f", {kept} failed kept (--keep-failed)" if kept else "")



def _shard_filter(shard: str | None):
    if not shard:
        return None
    from .inputs.ids import parse_shard

    return parse_shard(shard).owns
