"""Exponential back-off between retries of something that is unavailable."""

from __future__ import annotations

from collections.abc import Iterator


def backoff_delays(initial: float, maximum: float) -> Iterator[float]:
    """initial, 2*initial, 4*initial, ... capped at maximum, for ever."""
    delay = initial
    while True:
        yield delay
        delay = min(delay * 2, maximum)
