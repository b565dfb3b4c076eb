"""Multi-turn sessions, sent: turn k goes after turn k-1's reply has arrived.

Why: real chat traffic is conversations whose later turns resend the whole
history, and that is what a serving stack's prefix cache is for.  Each turn
carries the earlier user turns and the assistant's actual replies, so the
server sees what a real client sends.  What a session line is
(`runner.inputs.sessions`) is read with the inputs.
"""

from __future__ import annotations

import asyncio

from ..inputs.sessions import Session
from ..record import ERROR, OK, Record, Turn
from ..stream.errors import PastDeadline
from ..stream.paths import RESPONSES_PATH, InvalidRequestLine

think = asyncio.sleep  # the pause before a later turn (a name of its own, so a test can stand in for it)


def turn_body(path: str, params: dict, history: list[dict]) -> dict:
    """One turn's line: the session's parameters and the conversation so far, where this API takes it
    (the rest, Anthropic's system prompt among it, is `runner.stream.params`' as for any line)."""
    body = dict(params)
    body["input" if path == RESPONSES_PATH else "messages"] = history
    return body


async def run_session(sender, item, due: float | None, stage, warmup: bool) -> Record:
    """Every turn in order, each sent like a single prompt; the record keeps one entry per turn.

    A turn that fails (after its retries) ends the session: the record is an
    error with the turns that did happen.  The top-level text, metrics and
    finish_reason are the last turn's; usage and attempts add up every turn's.
    With --cache each turn is looked up and stored on its own (its body holds
    the actual history); the session is `cached` when every turn was (a
    cached turn has 0 attempts and no metrics of its own), and a turn after
    a cached one follows without the think time.

    --duration: a turn that would start after the deadline is not sent, and
    the session ends with the turns that did happen (its record has fewer
    `turns` than its line; their status is the record's).  So the record's
    `metrics.started_at`, the last turn's, is never after the deadline.  A
    session whose first turn would start after it has no record at all
    (PastDeadline goes up to the engine), as a single prompt would.
    """
    session: Session = item.session
    model = await sender.model_for(item.body or {})
    history = list(session.prefix)
    turns: list[Turn] = []
    last: Record | None = None
    cached = True
    for k, user in enumerate(session.turns):
        pause = session.think_time_s if last is not None and not last.cached else 0.0  # none after a reply never sent
        if k and sender.too_late(pause):  # the turn would start after --duration's deadline
            break
        if pause:
            await think(pause)
        history.append({"role": "user", "content": user})
        try:
            request = sender.build(item.path, turn_body(item.path, item.body or {}, history), model)
        except InvalidRequestLine as exc:
            return sender.invalid_record(item, stage, f"turn {k}: {exc}")
        try:
            last = await sender.answer(item, request, due if k == 0 else None, stage, warmup)
        except PastDeadline:
            if not k:
                raise
            break
        cached = cached and last.cached
        turns.append(Turn(k, last.text, last.reasoning, last.finish_reason, last.usage, last.metrics,
                          last.attempts, last.error))
        if not last.ok:
            break
        history.append({"role": "assistant", "content": last.text})
    if last is None:  # turn 0 answers, returns or raises; a Session has at least one turn (runner.inputs.sessions)
        raise ValueError("a session without turns")
    last.turns = turns
    last.cached = cached
    if not cached:
        last.cached_metrics = None
    last.status = OK if all(t.error is None for t in turns) else ERROR
    last.attempts = sum(t.attempts for t in turns)
    last.usage = _summed_usage([t.usage for t in turns])
    return last


def _summed_usage(usages: list[dict | None]) -> dict | None:
    """The session's usage: each integer count added over the turns (null when no turn had usage)."""
    total: dict[str, int] = {}
    for usage in usages:
        for key, value in (usage or {}).items():
            if type(value) is int:
                total[key] = total.get(key, 0) + value
    return total or None
