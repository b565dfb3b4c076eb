"""What both steps of a batch run work on: submit.py's Submitter and poll.py's Poller, given it once.

Why a record of its own: the two steps share the provider, the ledger, the
inputs, the output and the signal, and must see the same ones (a part the
submitter saved is the part the poller collects).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from .lines import InputLines
from .output import Found, Records
from .settings import BatchSettings
from .state import Ledger


@dataclass(frozen=True)
class BatchWork:
    provider: Any  # runner/batchapi/openai.OpenAIBatches or anthropic.AnthropicBatches
    ledger: Ledger
    lines: InputLines
    records: Records
    found: Found  # what the output held at the start
    settings: BatchSettings
    stopping: asyncio.Event  # set by the first signal: no part is submitted after it, and the poll returns
