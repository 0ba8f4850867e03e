"""Steady presence: ``stable`` turns true after k of the last n frames found the target
and false after m frames in a row missed it."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass(frozen=True)
class HysteresisConfig:
    """``k`` of the last ``n`` found frames to turn on; ``m`` misses in a row to turn off."""

    k: int = 2
    n: int = 3
    m: int = 3

    def __post_init__(self) -> None:
        if not 1 <= self.k <= self.n:
            raise ValueError(f"stable_k {self.k} must be between 1 and stable_n {self.n}")
        if self.m < 1:
            raise ValueError(f"stable_m {self.m} must be at least 1")


class Hysteresis:
    """Feed one found/missed per inference frame; :attr:`stable` is the steady state."""

    def __init__(self, config: HysteresisConfig = HysteresisConfig()):
        self.config = config
        self.recent: deque[bool] = deque(maxlen=config.n)
        self.misses = 0
        self.stable = False

    def update(self, found: bool) -> bool:
        """Record one frame; returns :attr:`stable` after it."""
        self.recent.append(bool(found))
        self.misses = 0 if found else self.misses + 1
        if self.stable:
            self.stable = self.misses < self.config.m
        else:
            self.stable = sum(self.recent) >= self.config.k and bool(found)
        return self.stable
