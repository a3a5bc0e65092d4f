"""How many threads the scoring kernels use, when they go parallel, and how they launch.

The one launch policy of the scoring core: every kernel pair (a serial and a
``parallel=True`` version) is run through ``run_kernel``, which picks one by
``parallel_for``. numba's ``set_num_threads`` is per calling thread: a value set on the
main thread does not reach the server's worker threads. So the wanted count is kept here,
process-wide, and applied by ``parallel_for`` on whichever thread launches a kernel.
Kernels that call BLAS split their rows over a small pool of Python threads instead
(``run_spans``).

Small batches keep the GIL. The serial kernels are compiled ``nogil=True`` so that threads
scoring large batches overlap; but giving the GIL up and taking it back costs a thread
hand-off whenever another thread wants it, and in a server one always does (gRPC's poller
thread): an agent answering one-row requests spent more on those hand-offs than on scoring
(an empty handler that gave the GIL up 6 times a request served a third of the requests).
Batches of at most ``HOLD_GIL_MAX_ROWS`` rows run a twin of the serial kernel compiled
without ``nogil`` (``holding_gil``).
"""

from __future__ import annotations

import threading
import types
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba

HOLD_GIL_MAX_ROWS = 64  # a kernel this short gains less from releasing the GIL than the hand-off costs
_twins: dict[Any, Any] = {}
_twins_lock = threading.Lock()

# Below this many rows a prange launch costs more than it saves (PERF_NOTES technique 6).
PARALLEL_MIN_ROWS = 1024

_wanted: int | None = None

# The workqueue threading layer aborts the process when two threads launch parallel
# kernels at once; the other layers (omp, tbb) do not need this lock.
_workqueue_lock = threading.Lock()


def _pool_size() -> int:
    """The size of numba's thread pool, fixed at start-up."""
    return int(numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]  # numba.config defines it at run time


def set_num_threads(n: int) -> None:
    """Use ``n`` threads in scoring kernels from now on, in every thread of the process.

    numba's pool is sized once at start-up (NUMBA_NUM_THREADS); asking for more is
    clamped to that size rather than failing, so one configuration fits every node.
    """
    global _wanted
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads needs a positive integer, got {n!r}")
    _wanted = min(n, _pool_size())
    numba.set_num_threads(_wanted)


def num_threads() -> int:
    """The thread count kernels will use."""
    return _wanted if _wanted is not None else _pool_size()


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


def run_kernel(serial: Callable[..., Any], parallel: Callable[..., Any], n_rows: int, *args: Any,
               force: bool | None = None) -> None:
    """Run ``serial(*args)``, or ``parallel(*args)`` for a batch of ``n_rows`` rows that
    ``parallel_for`` sends parallel (``force`` decides instead when given).

    A parallel launch holds a process-wide lock while the threading layer is, or may yet
    become, workqueue: that layer aborts the process when two threads launch at once.
    """
    if not (parallel_for(n_rows) if force is None else force):
        (holding_gil(serial) if n_rows <= HOLD_GIL_MAX_ROWS else serial)(*args)
    elif _may_be_workqueue():
        with _workqueue_lock:
            parallel(*args)
    else:
        parallel(*args)


def holding_gil(kernel: Any) -> Any:
    """``kernel`` (an ``njit(nogil=True)`` dispatcher) compiled again without ``nogil``.

    The twin is made from a copy of the Python function under another name: numba's disk
    cache is keyed by the function's name and signature, not its flags, so a twin of the
    same name would load the nogil machine code."""
    twin = _twins.get(kernel)
    if twin is None:
        with _twins_lock:
            twin = _twins.get(kernel)
            if twin is None:
                f = kernel.py_func
                copy = types.FunctionType(f.__code__, f.__globals__, f.__name__ + "_holding_gil", f.__defaults__,
                                          f.__closure__)
                copy.__qualname__ = f.__qualname__ + "_holding_gil"
                copy.__module__ = f.__module__
                copy.__doc__ = f.__doc__
                options = {k: v for k, v in kernel.targetoptions.items() if k not in ("nogil", "nopython")}
                twin = _twins[kernel] = numba.njit(**options)(copy)
    return twin


def _may_be_workqueue() -> bool:
    try:
        return numba.threading_layer() == "workqueue"
    except ValueError:  # no parallel kernel has run yet: the layer is not chosen
        return True


# Kernels that call BLAS (the MLP's matrix products) cannot run inside numba's prange:
# they split their rows into spans and run them on this pool, the caller taking one.
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def row_spans(n_rows: int, align: int) -> list[tuple[int, int]]:
    """Split ``range(n_rows)`` into one span per thread (a single span for a small batch
    or a single thread), each but the last a multiple of ``align`` rows long."""
    if n_rows <= 0:
        return []
    parts = num_threads() if n_rows >= PARALLEL_MIN_ROWS else 1
    per = -(-n_rows // parts)
    per = -(-per // align) * align
    return [(lo, min(n_rows, lo + per)) for lo in range(0, n_rows, per)]


def run_spans(work: Callable[[int, int], None], spans: list[tuple[int, int]]) -> None:
    """Run ``work(lo, hi)`` for every span: the first on the calling thread, the others
    on the shared pool. ``work`` must release the GIL for its heavy parts (numpy's BLAS
    calls and ``nogil`` numba kernels do). The first error is raised after all finish."""
    if len(spans) <= 1:
        for lo, hi in spans:
            work(lo, hi)
        return
    futures = [_shared_pool().submit(work, lo, hi) for lo, hi in spans[1:]]
    try:
        work(*spans[0])
    finally:
        for future in futures:
            future.exception()  # wait for every span before anything is raised
    for future in futures:
        future.result()


def _shared_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            workers = max(1, _pool_size() - 1)
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="scoring-core")
        return _pool


def pin_blas_to_one_thread() -> bool:
    """Make BLAS (OpenBLAS, MKL) run single-threaded in this whole process, from now on.

    For scoring processes: the MLP kernel runs one small GEMM per block on each of its
    own threads, and BLAS threads spinning beside them (or beside numba's pool) cost up
    to half the throughput (PERF_NOTES technique 8). Uses threadpoolctl when installed
    (it comes with scikit-learn) and returns whether it could; setting
    ``OPENBLAS_NUM_THREADS=1`` before numpy is imported does the same.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return False
    threadpool_limits(limits=1, user_api="blas")
    return True
