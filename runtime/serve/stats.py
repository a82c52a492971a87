"""What a serving runtime counts: requests, predictions per hour (the audit), latency."""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any

import numpy as np

WINDOW = 10_000  # latencies kept for the percentiles


def hour_key(ts: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H", time.gmtime(time.time() if ts is None else ts))


class Stats:
    """Thread-safe counters of one serving runtime."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests = 0
        self.predictions = 0
        self.per_hour: dict[str, int] = {}
        self._latency: deque[float] = deque(maxlen=WINDOW)
        self.version = 0  # bumps on every record (the reporter sends only when it moved)

    def record(self, predictions: int, latency_ms: float) -> None:
        key = hour_key()
        with self._lock:
            self.requests += 1
            self.predictions += predictions
            self.per_hour[key] = self.per_hour.get(key, 0) + predictions
            self._latency.append(latency_ms)
            self.version += 1

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            lat = np.array(self._latency) if self._latency else None
            return {
                "requests": self.requests,
                "predictions": self.predictions,
                "predictions_per_hour": dict(self.per_hour),
                "p50_ms": float(np.percentile(lat, 50)) if lat is not None else 0.0,
                "p99_ms": float(np.percentile(lat, 99)) if lat is not None else 0.0,
                "version": self.version,
            }
