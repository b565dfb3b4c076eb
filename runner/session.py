"""Multi-turn sessions: a line with `"turns"` is one conversation, sent turn by turn.

Why: real chat traffic is conversations whose later turns resend the whole
history, and that is what a serving stack's prefix cache is for.  Turn k
goes after turn k-1's reply has arrived, carrying the earlier user turns and
the assistant's actual replies, so the server sees what a real client sends.

The line format (docs/FORMATS.md)::

    {"custom_id": "s1", "turns": ["first user message", "second"],
     "messages": [{"role": "system", "content": "..."}],   # optional prefix
     "think_time_s": 1.5,                                   # optional pause before each later turn
     "max_tokens": 64}                                      # any other key is sent with every turn

ShareGPT lines (`"conversations": [{"from": "human"|"gpt"|"system", "value": ...}]`)
load as sessions (`--sharegpt sessions`: every human turn) or as single
prompts (the default: the first human turn), as vLLM's benchmark reads them.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any

from .record import ERROR, OK, Record, Turn
from .stream.errors import PastDeadline
from .stream.protocol import RESPONSES_PATH, InvalidRequestLine

SESSION_KEYS = ("turns", "think_time_s")
think = asyncio.sleep  # the pause before a later turn (a name of its own, so a test can stand in for it)
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "chatgpt": "assistant", "bard": "assistant", "bing": "assistant", "system": "system"}


@dataclass(frozen=True, slots=True)
class Session:
    """What makes a line a session; the rest of the line (its parameters) is the item's body."""

    turns: tuple[str, ...]
    prefix: tuple[dict, ...] = ()  # the line's own `messages`: a system prompt or an earlier exchange
    think_time_s: float = 0.0


def split_session(obj: dict) -> tuple[dict, Session] | None:
    """(the line without its session keys, the Session) for a line with `turns`; None for any other line.

    InvalidRequestLine when `turns` or `think_time_s` is malformed.
    """
    if "turns" not in obj:
        return None
    turns = obj["turns"]
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t for t in turns):
        raise InvalidRequestLine("'turns' must be a non-empty list of non-empty strings (the user messages)")
    think = obj.get("think_time_s", 0.0)
    if isinstance(think, bool) or not isinstance(think, (int, float)) or not math.isfinite(think) or think < 0:
        raise InvalidRequestLine("'think_time_s' must be a number of seconds >= 0")
    prefix = obj.get("messages", [])
    if not isinstance(prefix, list) or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                                               for m in prefix):
        raise InvalidRequestLine("'messages' of a session must be a list of objects with a 'role' (its prefix)")
    rest = {k: v for k, v in obj.items() if k not in SESSION_KEYS and k != "messages"}
    return rest, Session(tuple(turns), tuple(prefix), float(think))


def from_sharegpt(obj: dict, mode: str) -> dict:
    """A ShareGPT line as a streamrun line: a session of its human turns, or its first human turn alone."""
    conversation = obj.get("conversations")
    if not isinstance(conversation, list):
        raise InvalidRequestLine("'conversations' must be a list of {\"from\", \"value\"} objects (ShareGPT)")
    system, humans = [], []
    for i, turn in enumerate(conversation):
        role = _SHAREGPT_ROLES.get(turn.get("from")) if isinstance(turn, dict) else None
        if role is None or not isinstance(turn.get("value"), str):
            raise InvalidRequestLine(f"conversations[{i}] must be {{\"from\": \"human\"|\"gpt\"|\"system\", "
                                     "\"value\": \"...\"}")
        if role == "system":
            system.append({"role": "system", "content": turn["value"]})
        elif role == "user" and turn["value"]:
            humans.append(turn["value"])
    if not humans:
        raise InvalidRequestLine("the conversation has no human turn")
    line: dict[str, Any] = {k: v for k, v in obj.items() if k not in ("conversations", "id")}
    if mode == "sessions":
        line["turns"] = humans
        if system:
            line["messages"] = system
    else:
        line["messages"] = [*system, {"role": "user", "content": humans[0]}]
    return line


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
        pause = session.think_time_s if k and not last.cached else 0.0  # no pause after a reply never sent
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
