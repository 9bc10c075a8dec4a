"""A one-line progress display on stderr (no dependency needed for this)."""

from __future__ import annotations

import sys
import time


class Progress:
    """Rewrites one stderr line with done/total, rate, ETA and a caller's note."""

    def __init__(self, total: int, label: str, initial: int = 0) -> None:
        """``initial``: work already done before this process (a resumed run), left out of the rate."""
        self.total, self.label, self.initial, self.start = total, label, initial, time.monotonic()

    def update(self, done: int, note: str = "") -> None:
        elapsed = time.monotonic() - self.start
        rate = (done - self.initial) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        sys.stderr.write(f"\r{self.label}: {done}/{self.total} ({rate:.1f}/s, eta {eta / 60:.1f} min) {note}   ")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()
