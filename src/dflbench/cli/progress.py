"""Progress for a log: where stdout is not a terminal (no progress bar), `LogLines` prints a line when a run (an
AEDFL method) starts and one per evaluation at most every `EVERY` wall seconds, with the virtual time, the accuracy
and the wall time since the start; the commands print a line when each run ends."""

from __future__ import annotations

import time

from rich.console import Console

EVERY = 30.0                      # wall seconds between two evaluation lines of one run


class LogLines:
    """`lines(label, fraction, latest)`: the `on_progress` hook of `run_aedfl` (`latest`: the newest evaluation,
    {"time", "accuracy", ...}, None before the first; `fraction` of the run done)."""

    def __init__(self, console: Console, every: float | None = None):
        self.console, self.every = console, EVERY if every is None else every
        self.label: str | None = None
        self.start = self.shown = 0.0
        self.evaluated: float | None = None

    def __call__(self, label: str, fraction: float, latest: dict | None) -> None:
        now = time.perf_counter()
        if label != self.label:
            self.label, self.start, self.shown, self.evaluated = label, now, now, None
            self._print(f"{label}: started")
            return
        if latest is None or latest["time"] == self.evaluated or fraction >= 1.0 or now - self.shown < self.every:
            return
        self.shown, self.evaluated = now, latest["time"]
        self._print(f"{label}: virtual time {latest['time']:.1f} s, accuracy {latest['accuracy']:.4f}, "
                    f"{100 * fraction:.0f}% done, {now - self.start:.0f} s wall")

    def _print(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)
