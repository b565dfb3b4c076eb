"""How each chat parameter goes to the other APIs: renamed, moved, converted, dropped, or refused.

Why one table: lines are written for chat completions (every line `synth`
writes, ShareGPT prompts, sessions, most datasets), and `--api responses` or
`--api anthropic` sends them to an API that refuses what it does not know
with a 400 that costs the line, every time it is retried.  Whatever
streamrun can translate it translates here, once, for every body it builds
for those APIs (their `build_body`: plain lines, ShareGPT prompts, session
turns), and the README's table is this one (`markdown_table`).

For each parameter and API (a parameter in no row is sent as it is):

- renamed: the same value under the API's name (`max_tokens` ->
  `max_output_tokens`); the API's own name wins when a body has both;
- moved / converted: the value reshaped where the API keeps it (a system
  message to Anthropic's top-level `system`, `response_format` to
  `text.format`, chat-shaped `tools`); a value already in the API's own
  shape is sent as it is;
- dropped: no equivalent, and the answer is still an answer without it
  (sampling and delivery knobs): removed, with one warning per run;
- refused: dropping it would answer another request (`n` > 1, audio out):
  the line is an `invalid_input` record naming the parameter, nothing sent.
  A run's defaults (`--param`, a job's `[params]`) meet every API of a run,
  so a refused default is dropped with the warning instead.

A value that asks for nothing (`n: 1`, `logprobs: false`, the `text`
response format) is left out silently.  Knows JSON only: the caller says
how to warn (`on_drop`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

RESPONSES = "responses"
ANTHROPIC = "anthropic"
API_NAMES = {RESPONSES: "the Responses API", ANTHROPIC: "Anthropic's Messages API"}

RENAMED, MOVED, CONVERTED, DROPPED, REFUSED = "renamed", "moved", "converted", "dropped", "refused"


class RefusedParameter(ValueError):
    """A line's parameter that the API has no place for and that cannot be left out."""


@dataclass(frozen=True)
class Rule:
    """What one chat parameter becomes in one API.

    `to`: the API's parameter it becomes (renamed, moved, converted).
    `put(value, out)`: writes the converted value into the body being built.
    `why`: said in the warning or the error (dropped, refused).
    `idle(value)`: True for a value that asks for nothing (left out silently).
    `native(value)`: True for a value already in the API's shape (sent as is).
    `note`: what the README's table adds to the action.
    """

    action: str
    to: str = ""
    put: Callable[[Any, dict[str, Any]], None] | None = None
    why: str = ""
    idle: Callable[[Any], bool] | None = None
    native: Callable[[Any], bool] | None = None
    note: str = ""


# --------------------------------------------------------------------------
# Conversions


def _rename(to: str) -> Rule:
    def put(value: Any, out: dict[str, Any]) -> None:
        out.setdefault(to, value)
    return Rule(RENAMED, to, put)


def _nested(key: str, sub: str) -> Callable[[Any, dict[str, Any]], None]:
    """The value under `key.sub`, beside whatever `key` holds already (its own `sub` wins)."""
    def put(value: Any, out: dict[str, Any]) -> None:
        inner = out.get(key)
        inner = dict(inner) if isinstance(inner, dict) else {}
        inner.setdefault(sub, value)
        out[key] = inner
    return put


def _chat_tool(tool: Any) -> bool:
    return isinstance(tool, dict) and tool.get("type") == "function" and isinstance(tool.get("function"), dict)


def _chat_tools(value: Any) -> bool:
    return isinstance(value, list) and any(_chat_tool(t) for t in value)


def _flat_tools(value: Any, out: dict[str, Any]) -> None:
    """Chat's `{"type": "function", "function": {name, ...}}` as the Responses API's `{"type": "function", name, ...}`."""
    out["tools"] = [{"type": "function", **t["function"]} if _chat_tool(t) else t for t in value]


def _anthropic_tools(value: Any, out: dict[str, Any]) -> None:
    """Chat's function tools as Anthropic's `{name, description, input_schema}`."""
    def one(tool: Any) -> Any:
        if not _chat_tool(tool):
            return tool
        function = tool["function"]
        converted = {"name": function.get("name"),
                     "input_schema": function.get("parameters") or {"type": "object", "properties": {}}}
        if function.get("description") is not None:
            converted["description"] = function["description"]
        return converted
    out["tools"] = [one(t) for t in value]


def _chat_tool_choice(value: Any) -> bool:
    return value in ("auto", "required", "none") or (isinstance(value, dict) and isinstance(value.get("function"),
                                                                                          dict))


def _flat_tool_choice(value: Any, out: dict[str, Any]) -> None:
    out["tool_choice"] = ({"type": "function", "name": value["function"].get("name")} if isinstance(value, dict)
                          else value)


_ANTHROPIC_CHOICES = {"auto": "auto", "required": "any", "none": "none"}


def _anthropic_tool_choice(value: Any, out: dict[str, Any]) -> None:
    choice = ({"type": "tool", "name": value["function"].get("name")} if isinstance(value, dict)
              else {"type": _ANTHROPIC_CHOICES[value]})
    before = out.get("tool_choice")
    out["tool_choice"] = {**choice, **before} if isinstance(before, dict) else choice


def _no_parallel_tools(value: Any, out: dict[str, Any]) -> None:
    """`parallel_tool_calls: false` is Anthropic's `tool_choice.disable_parallel_tool_use: true`."""
    choice = out.get("tool_choice")
    choice = dict(choice) if isinstance(choice, dict) else {"type": "auto"}
    choice.setdefault("disable_parallel_tool_use", True)
    out["tool_choice"] = choice


def _text_format(value: Any, out: dict[str, Any]) -> None:
    """Chat's `response_format` as the Responses API's `text.format` (json_schema's fields one level up)."""
    fmt = value
    if isinstance(value, dict) and value.get("type") == "json_schema" and isinstance(value.get("json_schema"), dict):
        fmt = {"type": "json_schema", **value["json_schema"]}
    _nested("text", "format")(fmt, out)


_LOGPROBS_INCLUDE = "message.output_text.logprobs"


def _include_logprobs(value: Any, out: dict[str, Any]) -> None:
    include = out.get("include")
    include = list(include) if isinstance(include, list) else []
    if _LOGPROBS_INCLUDE not in include:
        include.append(_LOGPROBS_INCLUDE)
    out["include"] = include


def _stop_sequences(value: Any, out: dict[str, Any]) -> None:
    out.setdefault("stop_sequences", [value] if isinstance(value, str) else value)


def _user_id(value: Any, out: dict[str, Any]) -> None:
    _nested("metadata", "user_id")(value, out)


_SYSTEM_ROLES = ("system", "developer")


def _move_system(messages: Any, out: dict[str, Any]) -> None:
    """Anthropic keeps the system prompt apart: system (and developer) messages go to `system`, in order,
    after the body's own `system`; the conversation keeps the rest."""
    if not isinstance(messages, list):
        out["messages"] = messages
        return
    system = [m for m in messages if isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES]
    if not system:
        out["messages"] = messages
        return
    out["messages"] = [m for m in messages if not (isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES)]
    parts = ([out["system"]] if out.get("system") is not None else []) + [m.get("content") for m in system]
    if all(isinstance(p, str) for p in parts):
        out["system"] = "\n\n".join(parts)
        return
    blocks: list[Any] = []
    for part in parts:  # Anthropic's text blocks, where a message had chat's content parts
        if isinstance(part, str):
            blocks.append({"type": "text", "text": part})
        elif isinstance(part, list):
            blocks.extend(p for p in part if isinstance(p, dict))
    out["system"] = blocks


_PART_TYPES = {"text": None, "image_url": "input_image"}


def _input_part(part: Any, role: Any) -> Any:
    """A chat content part as the Responses API's: text is input_text (output_text in an assistant turn)."""
    if not isinstance(part, dict) or part.get("type") not in _PART_TYPES:
        return part
    if part["type"] == "text":
        return {"type": "output_text" if role == "assistant" else "input_text", "text": part.get("text")}
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    converted = {"type": "input_image", "image_url": url}
    if isinstance(image, dict) and image.get("detail") is not None:
        converted["detail"] = image["detail"]
    return converted


def responses_input(value: Any) -> Any:
    """Chat messages as the Responses API's input items: content parts in its types (else sent as they are)."""
    if not isinstance(value, list):
        return value
    out = []
    for item in value:
        if isinstance(item, dict) and isinstance(item.get("content"), list):
            item = {**item, "content": [_input_part(p, item.get("role")) for p in item["content"]]}
        out.append(item)
    return out


def _input(messages: Any, out: dict[str, Any]) -> None:
    out.setdefault("input", responses_input(messages))


# --------------------------------------------------------------------------
# The table


def _one(value: Any) -> bool:
    return bool(value == 1)


def _off(value: Any) -> bool:
    return value is None or value is False or value == 0


def _text_only(value: Any) -> bool:
    return bool(value == ["text"])


def _text_format_only(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type") == "text"


def _anthropic_metadata(value: Any) -> bool:
    return isinstance(value, dict) and set(value) <= {"user_id"}


def _anthropic_tier(value: Any) -> bool:
    return value in ("auto", "standard_only")


_SAMPLING = "a sampling setting it does not have"
_ONE_ANSWER = "it gives one answer per request: send the line n times (distinct custom_ids) instead"
_AUDIO = "it answers in text only"
_SEARCH = "give its own web search tool in 'tools' instead"
_LEGACY = "the deprecated function-calling parameters: give 'tools' and 'tool_choice' instead"

RULES: dict[str, dict[str, Rule]] = {
    RESPONSES: {
        "messages": Rule(CONVERTED, "input", _input, note="chat's content parts as its own"),
        "max_tokens": _rename("max_output_tokens"),
        "max_completion_tokens": _rename("max_output_tokens"),
        "n": Rule(REFUSED, why=_ONE_ANSWER, idle=_one, note="unless 1"),
        "stop": Rule(DROPPED, why="it has no stop sequences"),
        "stream_options": Rule(DROPPED, idle=lambda v: True),  # streamrun's own: usage always comes
        "logprobs": Rule(CONVERTED, "include", _include_logprobs, idle=_off),
        "response_format": Rule(CONVERTED, "text.format", _text_format),
        "reasoning_effort": Rule(CONVERTED, "reasoning.effort", _nested("reasoning", "effort")),
        "verbosity": Rule(CONVERTED, "text.verbosity", _nested("text", "verbosity")),
        "tools": Rule(CONVERTED, "tools", _flat_tools, native=lambda v: not _chat_tools(v),
                      note="function tools flattened"),
        "tool_choice": Rule(CONVERTED, "tool_choice", _flat_tool_choice, native=lambda v: not isinstance(v, dict)
                            or not isinstance(v.get("function"), dict), note="a named function flattened"),
        "seed": Rule(DROPPED, why=_SAMPLING),
        "frequency_penalty": Rule(DROPPED, why=_SAMPLING),
        "presence_penalty": Rule(DROPPED, why=_SAMPLING),
        "logit_bias": Rule(DROPPED, why=_SAMPLING),
        "prediction": Rule(DROPPED, why="it has no predicted outputs"),
        "modalities": Rule(REFUSED, why=_AUDIO, idle=_text_only, note='unless ["text"]'),
        "audio": Rule(REFUSED, why=_AUDIO),
        "web_search_options": Rule(REFUSED, why=_SEARCH),
        "functions": Rule(REFUSED, why=_LEGACY),
        "function_call": Rule(REFUSED, why=_LEGACY),
    },
    ANTHROPIC: {
        "messages": Rule(MOVED, "system", _move_system, note="its system and developer messages"),
        "max_completion_tokens": _rename("max_tokens"),
        "max_output_tokens": _rename("max_tokens"),
        "n": Rule(REFUSED, why=_ONE_ANSWER, idle=_one, note="unless 1"),
        "stop": Rule(CONVERTED, "stop_sequences", _stop_sequences, note="a string as a list"),
        "stream_options": Rule(DROPPED, idle=lambda v: True),  # streamrun's own: usage always comes
        "logprobs": Rule(DROPPED, why="it has no log probabilities", idle=_off),
        "top_logprobs": Rule(DROPPED, why="it has no log probabilities", idle=_off),
        "response_format": Rule(REFUSED, why="it has no response_format (ask for the JSON in the prompt)",
                                idle=_text_format_only, note="unless type text"),
        "reasoning_effort": Rule(DROPPED, why="its thinking takes a token budget: give 'thinking' on the line"),
        "verbosity": Rule(DROPPED, why="it has no verbosity"),
        "user": Rule(CONVERTED, "metadata.user_id", _user_id),
        "metadata": Rule(DROPPED, why="its metadata holds only user_id", native=_anthropic_metadata,
                         note="unless it holds only user_id"),
        "tools": Rule(CONVERTED, "tools", _anthropic_tools, native=lambda v: not _chat_tools(v),
                      note="function tools as name, description, input_schema"),
        "tool_choice": Rule(CONVERTED, "tool_choice", _anthropic_tool_choice,
                            native=lambda v: not _chat_tool_choice(v), note="required is any"),
        "parallel_tool_calls": Rule(CONVERTED, "tool_choice.disable_parallel_tool_use", _no_parallel_tools,
                                    idle=lambda v: v is not False, note="false only"),
        "seed": Rule(DROPPED, why=_SAMPLING),
        "frequency_penalty": Rule(DROPPED, why=_SAMPLING),
        "presence_penalty": Rule(DROPPED, why=_SAMPLING),
        "logit_bias": Rule(DROPPED, why=_SAMPLING),
        "store": Rule(DROPPED, why="it stores nothing"),
        "prediction": Rule(DROPPED, why="it has no predicted outputs"),
        "service_tier": Rule(DROPPED, why="its tiers are auto and standard_only", native=_anthropic_tier,
                             note="unless auto or standard_only"),
        "prompt_cache_key": Rule(DROPPED, why="its prompt cache is asked for with cache_control"),
        "safety_identifier": Rule(DROPPED, why="it has no safety_identifier"),
        "modalities": Rule(REFUSED, why=_AUDIO, idle=_text_only, note='unless ["text"]'),
        "audio": Rule(REFUSED, why=_AUDIO),
        "web_search_options": Rule(REFUSED, why=_SEARCH),
        "functions": Rule(REFUSED, why=_LEGACY),
        "function_call": Rule(REFUSED, why=_LEGACY),
    },
}

# Parameters of the other OpenAI APIs that a run's defaults may hold for their lines (completions'
# prompt options; the Responses API's own for Anthropic): left out of this API's defaults silently.
_FOREIGN_DEFAULTS = {
    RESPONSES: frozenset({"prompt", "suffix", "echo", "best_of"}),
    ANTHROPIC: frozenset({"prompt", "suffix", "echo", "best_of", "reasoning", "text", "include", "instructions"}),
}


def translate(api: str, params: dict[str, Any], *, line: bool,
              on_drop: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """`params` (a line's body, or the run's defaults with `line=False`) as `api` takes them.

    Raises RefusedParameter for a line's refused parameter; `on_drop(key,
    why)` hears of every parameter dropped with a warning.
    """
    if not params:
        return params
    rules = RULES[api]
    foreign = frozenset() if line else _FOREIGN_DEFAULTS[api]
    out = {k: v for k, v in params.items() if k not in rules and k not in foreign}
    if api == RESPONSES and not line and isinstance(params.get("prompt"), dict):
        out["prompt"] = params["prompt"]  # the Responses API's own prompt template, not completions' text
    for key, rule in rules.items():  # in the table's order: tool_choice before parallel_tool_calls
        if key not in params:
            continue
        value = params[key]
        if rule.native is not None and rule.native(value):
            out[key] = value
        elif rule.idle is not None and rule.idle(value):
            continue
        elif rule.put is not None:
            rule.put(value, out)
        elif rule.action == REFUSED and line:
            raise RefusedParameter(f"{key!r} cannot be sent to {API_NAMES[api]}: {rule.why}")
        elif on_drop is not None:
            on_drop(key, f"{API_NAMES[api]} has no {key!r} ({rule.why}): left out")
    return out


def markdown_table() -> str:
    """The README's table of how chat parameters map to each API, generated so it cannot drift."""
    keys = list(dict.fromkeys(k for rules in RULES.values() for k in rules))
    rows = ["| parameter | Responses API (`--api responses`) | Anthropic Messages (`--api anthropic`) |",
            "|---|---|---|"]
    for key in keys:
        rows.append(f"| `{key}` | {_cell(RULES[RESPONSES].get(key))} | {_cell(RULES[ANTHROPIC].get(key))} |")
    return "\n".join(rows)


def _cell(rule: Rule | None) -> str:
    if rule is None:
        return "sent as is"
    if rule.action == DROPPED and rule.idle is not None and not rule.why:
        return "left out (streamrun's own)"
    text = f"{rule.action} → `{rule.to}`" if rule.to else rule.action
    if rule.action == REFUSED:
        text += " as `invalid_input`"
    elif rule.action == DROPPED:
        text += ", with a warning"
    return f"{text} ({rule.note})" if rule.note else text
