"""Rate and ETA of a learner loop, measured from the end of its first step.

The first step of a run carries the start-up (the data stream's actors, the first rollouts, the first
forward); timing from there made the first ETAs 10-50x too long.

A stage prints a progress line for about every 2% of its steps (every step up to 50): the default's
1,024 SFT steps printed 1,024 lines. metrics.jsonl keeps every step.
"""

from __future__ import annotations

import time


class Pace:
    def __init__(self, total_steps: int):
        self.total_steps = total_steps
        self.mark: tuple[float, int, int] | None = None  # (time, step, tokens) at the end of the first step

    def update(self, step: int, tokens: int = 0) -> tuple[float | None, float | None]:
        """(tokens per second, seconds left) after `step` with `tokens` seen in all; None until measurable."""
        now = time.time()
        if self.mark is None:
            self.mark = (now, step, tokens)
            return None, None
        since, first_step, first_tokens = self.mark
        elapsed = max(now - since, 1e-6)
        return (tokens - first_tokens) / elapsed, (self.total_steps - step) * elapsed / max(step - first_step, 1)

    def due(self, step: int) -> bool:
        """Whether `step` gets a progress line: the first after a (re)start, every ~2% and the last."""
        return self.mark is None or step >= self.total_steps or step % max(1, self.total_steps // 50) == 0

    @staticmethod
    def describe(rate: float | None, eta: float | None) -> str:
        rate_text = "" if rate is None else f"{rate:.0f} tok/s "
        return rate_text + ("ETA -" if eta is None else f"ETA {eta:.0f}s")
