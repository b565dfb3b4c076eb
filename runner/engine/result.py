"""What one run of the engine came to: the counts its summary and the workers' reports are made of.

Apart from the loop (`loop.py`) because the sender (`send.py`) counts into it too.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EngineResult:
    interrupted: bool = False
    sent: int = 0  # requests sent, a request retried counted once (runner.engine.send.Sender.request)
    cancelled: int = 0
    completed: int = 0  # records written
    endpoints: list = field(default_factory=list)
    stage_rates: dict = field(default_factory=dict)  # stage index -> records per second it completed
    sweep: dict | None = None  # --rate sweep: the measured ends and the rates chosen
