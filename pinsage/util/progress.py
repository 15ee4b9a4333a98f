"""Progress of long stages, readable both in a terminal and in a log file.

A terminal gets one line redrawn in place (``\\r``) at most ten times a second. Anything else (an
Airflow task log, a CI log, a pipe) gets whole lines, at most one per ~10% step, so a log shows
``train epoch 3/8: 40% (1060/2650 batches)`` instead of thousands of carriage-return fragments.

Own code rather than tqdm: tqdm is not a dependency of the project, and its non-TTY output is the
carriage-return stream that makes Airflow logs unreadable.

``PINSAGE_PROGRESS=0`` silences it (e.g. in benchmarks that time the stages).
"""

from __future__ import annotations

import os
import sys
import time
from typing import Iterable, Iterator, TextIO, TypeVar

T = TypeVar("T")

BAR_WIDTH = 30
TTY_INTERVAL_S = 0.1  # redraws per second in a terminal, at most 10
LOG_STEP = 0.1  # one log line per 10% of the work


class Progress:
    """Count work done towards ``total`` and show it.

    ``Progress("export layer 1/2", total=n_chunks, unit="chunks")``; ``update(k)`` after each piece,
    ``close()`` at the end (or use it as a context manager). ``total`` 0 shows nothing.
    """

    def __init__(self, label: str, total: int, unit: str = "", stream: TextIO | None = None,
                 tty: bool | None = None, enabled: bool | None = None):
        self.label, self.total, self.unit = label, max(0, int(total)), unit
        self.stream = stream if stream is not None else sys.stderr
        if tty is None:
            isatty = getattr(self.stream, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        if enabled is None:
            enabled = os.environ.get("PINSAGE_PROGRESS", "1") not in ("0", "false", "no", "off")
        self.enabled = enabled and self.total > 0
        self.done = 0
        self._next_step = LOG_STEP  # next fraction at which a log line is due
        self._last_draw = 0.0
        self._emitted = -1  # ``done`` at the last log line
        self._t0 = time.perf_counter()
        self._closed = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def text(self) -> str:
        frac = min(1.0, self.done / self.total) if self.total else 1.0
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.label}: {frac:4.0%} ({self.done}/{self.total}{unit})"

    def update(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled or self._closed:
            return
        frac = self.done / self.total
        if self.tty:
            now = time.perf_counter()
            if now - self._last_draw >= TTY_INTERVAL_S or self.done >= self.total:
                self._last_draw = now
                filled = int(round(BAR_WIDTH * min(1.0, frac)))
                bar = "#" * filled + "." * (BAR_WIDTH - filled)
                self.stream.write(f"\r{self.label} [{bar}] {self.text()[len(self.label) + 2:]}")
                self.stream.flush()
        elif frac + 1e-12 >= self._next_step:
            self._emit()
            # skip the steps this update jumped over: never two lines for one update
            while self._next_step <= frac + 1e-12:
                self._next_step += LOG_STEP

    def _emit(self) -> None:
        self._emitted = self.done
        self.stream.write(f"{self.text()} {time.perf_counter() - self._t0:.1f}s\n")
        self.stream.flush()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self.enabled:
            return
        if self.tty:
            self.stream.write(f" {time.perf_counter() - self._t0:.1f}s\n")
            self.stream.flush()
        elif self.done < self.total and self._emitted != self.done:  # stopped early: say where
            self._emit()


def track(iterable: Iterable[T], total: int, label: str, unit: str = "", **kwargs) -> Iterator[T]:
    """Yield from ``iterable``, counting each item as one unit of ``total``."""
    with Progress(label, total, unit, **kwargs) as bar:
        for item in iterable:
            yield item
            bar.update()
