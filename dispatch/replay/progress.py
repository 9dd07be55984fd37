"""A one-line progress bar on stderr: orders placed, delivered and late, and the day's minute."""

from __future__ import annotations

import sys
from typing import TextIO

WIDTH = 30


class Progress:
    def __init__(self, total: int, *, enabled: bool = True, stream: TextIO | None = None) -> None:
        self.total = total
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.n_placed = 0
        self.n_delivered = 0
        self.n_late = 0
        self._shown = False

    def placed(self) -> None:
        self.n_placed += 1

    def delivered(self, late: bool) -> None:
        self.n_delivered += 1
        self.n_late += late

    def line(self, minute: float) -> str:
        share = self.n_delivered / self.total if self.total else 1.0
        done = round(WIDTH * share)
        placed = round(WIDTH * self.n_placed / self.total) if self.total else WIDTH
        bar = "#" * done + "." * max(0, placed - done) + " " * (WIDTH - max(done, placed))
        return (
            f"[{bar}] placed {self.n_placed}/{self.total}  delivered {self.n_delivered}  "
            f"late {self.n_late}  minute {minute:.0f}"
        )

    def show(self, minute: float) -> None:
        if self.enabled:
            self.stream.write("\r" + self.line(minute))
            self.stream.flush()
            self._shown = True

    def close(self, minute: float) -> None:
        if self.enabled:
            self.show(minute)
            self.stream.write("\n")
            self.stream.flush()
