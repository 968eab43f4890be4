"""Waits between attempts, shared by everything that retries: followers of a change log,
stores retrying a conflicting write, channels of pushed changes reopening."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Waits between attempts: jittered, doubling from ``first`` up to ``most``."""

    first: float
    most: float
    #: The lowest share of the wait that jitter keeps (0: anything from no wait at all).
    floor: float = 0.0

    def delay(self, failures: int) -> float:
        ceiling = min(self.most, self.first * 2 ** min(max(failures - 1, 0), 20))
        return random.uniform(self.floor * ceiling, ceiling)
