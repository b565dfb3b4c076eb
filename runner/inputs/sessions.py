"""Session lines: a line with `"turns"` is one conversation; ShareGPT lines are read as sessions or prompts.

The line format (docs/FORMATS.md)::

    {"custom_id": "s1", "turns": ["first user message", "second"],
     "messages": [{"role": "system", "content": "..."}],   # optional prefix
     "think_time_s": 1.5,                                   # optional pause before each later turn
     "max_tokens": 64}                                      # any other key is sent with every turn

ShareGPT lines (`"conversations": [{"from": "human"|"gpt"|"system", "value": ...}]`)
load as sessions (`--sharegpt sessions`: every human turn) or as single
prompts (the default: the first human turn), as vLLM's benchmark reads them.
How a session is sent is `runner.engine.session`'s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..stream.paths import InvalidRequestLine

SESSION_KEYS = ("turns", "think_time_s")
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
        speaker = turn.get("from") if isinstance(turn, dict) else None
        role = _SHAREGPT_ROLES.get(speaker) if isinstance(speaker, str) else None  # a list is no key: no TypeError
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
