"""How many threads the scoring kernels use, and when they go parallel at all.

numba's ``set_num_threads`` is per calling thread: a value set on the main thread does
not reach the server's worker threads. So the wanted count is kept here, process-wide,
and applied by ``parallel_for`` on whichever thread launches a kernel.
"""

from __future__ import annotations

import numba

# Below this many rows a prange launch costs more than it saves (PERF_NOTES technique 6).
PARALLEL_MIN_ROWS = 1024

_wanted: int | None = None


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in scoring kernels from now on, in every thread of the process.

    numba's pool is sized once at start-up (NUMBA_NUM_THREADS); asking for more is
    clamped to that size rather than failing, so one configuration fits every node.
    """
    global _wanted
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads needs a positive integer, got {n!r}")
    _wanted = min(n, numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(_wanted)


def num_threads() -> int:
    """The thread count kernels will use."""
    return _wanted if _wanted is not None else numba.config.NUMBA_NUM_THREADS


def parallel_for(n_rows: int) -> bool:
    """Whether a batch of ``n_rows`` should take the parallel kernel; if so, the calling
    thread's numba thread count is set to the process-wide choice first."""
    if n_rows < PARALLEL_MIN_ROWS:
        return False
    wanted = num_threads()
    if wanted <= 1:
        return False
    if numba.get_num_threads() != wanted:
        numba.set_num_threads(wanted)
    return True
