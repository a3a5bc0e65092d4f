"""Shared timing and reporting for the benchmarks: best-of rates, the read limit, JSON out."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def rate(fn: Callable[[], object], rows: int, *, min_seconds: float = 0.5, max_calls: int = 100_000) -> dict:
    """Rows per second of fn, timed in repeats until min_seconds pass; best repeat wins.

    Small batches are timed as many calls in a loop, so the per-call overhead
    is what they measure, as a caller would see it.
    """
    fn()  # warm up: compile, allocate, fill caches
    calls_per_repeat = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(calls_per_repeat):
            fn()
        elapsed = time.perf_counter() - t0
        if elapsed > 0.05 or calls_per_repeat >= max_calls:
            break
        calls_per_repeat *= 4
    best = elapsed / calls_per_repeat
    spent = elapsed
    while spent < min_seconds:
        t0 = time.perf_counter()
        for _ in range(calls_per_repeat):
            fn()
        elapsed = time.perf_counter() - t0
        spent += elapsed
        best = min(best, elapsed / calls_per_repeat)
    return {"rows_per_s": rows / best, "us_per_call": best * 1e6}


def read_limit_kernel() -> Callable[[Any], float]:
    """A numba prange sum over a 1-D float32 array: the fastest this machine streams one
    (on numba's current thread count), the ceiling of a bandwidth-bound kernel."""
    import numba
    import numpy as np

    # fastmath lets the reduction vectorise; without it the add chain, not memory, is the limit.
    @numba.njit(parallel=True, nogil=True, cache=False, fastmath=True)
    def total(a):
        s = np.float32(0.0)
        for i in numba.prange(a.shape[0]):
            s += a[i]
        return s

    return total


def machine() -> dict:
    return {
        "cpu": platform.processor() or platform.machine(),
        "cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def write(name: str, payload: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True))
    return path


def table(headers: list[str], rows: list[list[object]]) -> str:
    def cell(c: object) -> str:
        if isinstance(c, float):
            return f"{c:,.0f}" if c >= 100 else f"{c:.3g}"
        return str(c)

    cells = [headers] + [[cell(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
