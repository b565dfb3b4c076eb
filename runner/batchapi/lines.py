"""The run's input lines, read again by each step that needs them, and checked against what was planned.

Why apart: a batch run keeps none of its lines in memory, only the state
file's ranges of line numbers (the order in which the inputs are read,
0-based, invalid lines included).  Each step reads the inputs again: to
choose the lines to submit, to write each part's upload, to match a
batch's results to its lines.  Every read checks the lines of the parts it
touches against their fingerprints, so that an input changed under a
running batch is refused (exit 2), never misread.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Callable, Iterator

from ..config.run_config import TransportConfig
from ..errors import UsageError
from ..inputs.items import InputItem, iter_items
from ..stream.headers import ANTHROPIC
from ..stream.paths import InvalidRequestLine
from . import collect
from .output import Found
from .plan import Fingerprint, Membership, wire_request
from .settings import BatchSettings
from .state import Part


class InputLines:
    """The input files as a batch run reads them; `ctx.model` is the model of lines that name none."""

    def __init__(self, paths: list[str], transport: TransportConfig, sharegpt: str, params: dict,
                 settings: BatchSettings, ctx: collect.Context, state_path: str) -> None:
        self.paths = paths
        self.max_line = transport.limits.max_line_bytes
        self.api = transport.api
        self.sharegpt = sharegpt
        self.params = params
        self.settings = settings
        self.ctx = ctx
        self.state_path = state_path

    def items(self) -> Iterator[tuple[int, InputItem]]:
        return enumerate(iter_items(self.paths, self.max_line, self.api, self.sharegpt))

    def to_submit(self, parts: list[Part], found: Found, resubmit_failed: bool,
                  on_invalid: Callable[[InputItem, str], None]) -> array:
        """The lines to submit (by number): those of no open part without a final record (or with a failed one,
        `resubmit_failed`); a line no batch can take goes to `on_invalid` instead.  The open parts' lines are
        checked on the way."""
        open_parts = [p for p in parts if p.pending]
        owners = Membership(open_parts)
        prints = {p.index: Fingerprint() for p in open_parts}
        pending = array("Q")
        for ordinal, item in self.items():
            part = owners.owner(ordinal) if owners else None
            if part is not None:
                prints[part.index].add(item.custom_id)
                continue
            final = found.has_final(item.custom_id)
            if final and not (resubmit_failed and found.has_failed(item.custom_id)):
                continue
            if item.error is not None:
                if not final:
                    on_invalid(item, item.error)
                continue
            pending.append(ordinal)
        for part in open_parts:
            self._check(part, prints[part.index])
        return pending

    def wanted(self, ordinals: array) -> Iterator[tuple[int, InputItem]]:
        """The lines of these numbers (ascending), in one reading of the inputs that stops after the last."""
        at = 0
        for ordinal, item in self.items():
            if at == len(ordinals):
                return
            if ordinal == ordinals[at]:
                at += 1
                yield ordinal, item

    def needs_model(self, ordinals: array) -> bool:
        """Whether one of these lines names no model (then the server is asked for its only one, as `run` does)."""
        return any("model" not in (item.body or {}) for _, item in self.wanted(ordinals))

    def members(self, parts: list[Part]) -> Iterator[tuple[Part, collect.Member]]:
        """The parts' lines read back, as submitted; UsageError once the scan shows an input changed."""
        owners = Membership(parts)
        prints = {p.index: Fingerprint() for p in parts}
        for ordinal, item in self.items():
            part = owners.owner(ordinal)
            if part is None:
                continue
            prints[part.index].add(item.custom_id)
            try:
                if item.error is not None:
                    raise InvalidRequestLine(item.error)
                wire = wire_request(item, self.settings, self.params, self.ctx.model)
            except InvalidRequestLine:  # a line that was valid when planned is no longer
                raise self.changed(part) from None
            yield part, collect.Member(item, wire)
        for part in parts:
            self._check(part, prints[part.index])

    def payloads(self, parts: list[Part], folder: str) -> dict[int, str]:
        """Each part's upload (OpenAI's JSONL file, Anthropic's create body), written into `folder`."""
        anthropic = self.settings.provider == ANTHROPIC
        paths = {p.index: os.path.join(folder, f"part{p.index}.json{'' if anthropic else 'l'}") for p in parts}
        files = {i: open(path, "wb") for i, path in paths.items()}
        first = dict.fromkeys(paths, True)
        try:
            if anthropic:
                for f in files.values():
                    f.write(b'{"requests":[')
            for part, member in self.members(parts):
                f = files[part.index]
                if anthropic and not first[part.index]:
                    f.write(b",")
                first[part.index] = False
                f.write(member.wire.data if anthropic else member.wire.data + b"\n")
            if anthropic:
                for f in files.values():
                    f.write(b"]}")
        finally:
            for f in files.values():
                f.close()
        return paths

    def _check(self, part: Part, found: Fingerprint) -> None:
        if found.hexdigest() != part.fingerprint:
            raise self.changed(part)

    def changed(self, part: Part) -> UsageError:
        return UsageError(
            f"the input lines of batch part {part.index} ({part.batch_id or 'not yet submitted'}) have changed "
            f"since it was planned: restore the inputs of {self.state_path}'s run, or let it end and start "
            "another output")
