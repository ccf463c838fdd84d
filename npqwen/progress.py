"""Progress on stderr for work that takes more than a moment, shown only when stderr is a terminal
(pipes and CI stay quiet)."""

import sys
import time


class Progress:
    def __init__(self, what: str, total: int, enabled: bool = True, delay: float = 1.0):
        self.what, self.total, self.t0, self.delay = what, total, time.perf_counter(), delay
        self.enabled = enabled and total > 1 and sys.stderr.isatty()
        self.shown = False

    def update(self, done: int) -> None:
        if self.enabled and time.perf_counter() - self.t0 >= self.delay:
            sys.stderr.write(f"\r{self.what} {done}/{self.total}")
            sys.stderr.flush()
            self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * (len(self.what) + 24) + "\r")
            sys.stderr.flush()
