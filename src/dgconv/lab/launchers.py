"""Where a sweep's runs execute: a local process pool (the default) or a cluster through submitit (Slurm).

A launcher is a pool with the part of the ``concurrent.futures`` executor interface the sweep uses: ``submit(fn,
*args)`` returns a :class:`~concurrent.futures.Future` of ``fn``'s result (a run's exit status), ``shutdown()``, and
:func:`stop`, which stops the runs at checkpoint-safe points (they resume when the sweep is run again).

* ``local``: ``parallel`` spawned worker processes that import torch once and train run after run; a worker that
  dies fails only its run (the sweep sees ``BrokenProcessPool`` and starts a new pool).
* ``submitit``: every run is one submitit job -- a Slurm job on a cluster (``sbatch`` on the PATH), or a local
  subprocess with ``cluster="local"`` (how the tests run it). ``parallel`` is how many jobs are queued at once. A job
  that ends without a result (cancelled, pre-empted, out of memory, past its time limit) fails its run with exit
  status -1; its run directory keeps the last checkpoint, so running the sweep again resumes it. Stopping the sweep
  cancels its jobs (Slurm sends SIGTERM, and each run stops at a checkpoint). Needs ``pip install submitit``.

Example (a local pool of two workers)::

    >>> pool = make_launcher("local")(2)
    >>> pool.submit(abs, -3).result()
    3
    >>> stop(pool)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from concurrent.futures import wait as wait_all
from pathlib import Path
from typing import Any

from ..errors import ConfigError, MissingExtraError

__all__ = ["LAUNCHERS", "make_launcher", "stop", "SubmititPool", "LocalPool", "orphaned"]

LAUNCHERS = ("local", "submitit")


# ------------------------------------------------------------------------------------------------ local
_PARENT: list[int] = []  # the sweep process that started this worker (set in the worker)


#: Seconds an orphaned worker gives its run to stop at a checkpoint before it ends itself.
ORPHAN_GRACE = 120.0


def _worker_init(threads: int) -> None:
    _PARENT.append(os.getppid())
    _die_with_parent()
    import threading

    threading.Thread(target=_end_when_orphaned, name="dgconv-orphan-watch", daemon=True).start()
    import torch

    torch.set_num_threads(threads)


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the sweep process dies, however it dies (its run stops at a checkpoint)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        if os.getppid() == 1:  # the parent is already gone
            os.kill(os.getpid(), signal.SIGTERM)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        pass


def _end_when_orphaned(poll: float = 1.0) -> None:
    """A worker's watch: once the sweep process is gone (SIGKILL; its death signal stops the run at a checkpoint),
    end this process after :data:`ORPHAN_GRACE` seconds at most, whatever it was doing -- a worker whose signal
    arrived between two runs, or inside the pool's own plumbing, otherwise waits forever on its task pipe."""
    import time

    while not orphaned():
        time.sleep(poll)
    time.sleep(ORPHAN_GRACE)
    os._exit(3)


def orphaned() -> bool:
    """In a local pool's worker: whether the sweep process that started it has died (its SIGTERM already stopped
    the run; the worker must then end too, or it waits forever on a task pipe it holds open itself)."""
    return bool(_PARENT) and os.getppid() != _PARENT[0]


def LocalPool(parallel: int) -> Any:
    """``parallel`` spawned worker processes, each with an equal share of the CPU threads."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    threads = max(1, (os.cpu_count() or 2) // parallel)
    return ProcessPoolExecutor(parallel, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                               initargs=(threads,))


def _alive(proc: Any) -> bool:
    """Whether a worker process still exists. The pool's own thread may reap a worker first; multiprocessing then
    never learns its exit code and ``is_alive()`` stays True, so ask the OS."""
    if not proc.is_alive():
        return False
    try:
        os.kill(proc.pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # pragma: no cover - exists, but not ours to signal
        return True
    return True


def stop(pool: Any) -> None:
    """Stop a pool's runs at checkpoint-safe points. Local workers get SIGTERM (again after a minute if still there,
    then SIGKILL); submitit jobs are cancelled."""
    if isinstance(pool, SubmititPool):
        pool.stop()
        return
    # ProcessPoolExecutor keeps its workers in _processes, which shutdown() sets to None: take them first
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.join(60)
        if _alive(proc):  # its run stopped at a checkpoint and the worker went idle: end it
            proc.terminate()
            proc.join(10)
        if _alive(proc):
            proc.kill()


# ------------------------------------------------------------------------------------------------ submitit
class SubmititPool:
    """Runs as submitit jobs; each ``submit`` returns a Future that a watcher thread completes when the job ends.

    Args:
        folder: where submitit keeps each job's pickles and its stdout/stderr (``<folder>/<job id>_0_log.err``).
        cluster: ``None`` (Slurm where ``sbatch`` is found, else local processes), ``"slurm"`` or ``"local"``.
        poll: seconds between checks of the jobs' states (submitit itself limits how often it asks Slurm).
        parameters: submitit's executor parameters (``timeout_min``, ``slurm_partition``, ``gpus_per_node``,
            ``cpus_per_task``, ``slurm_additional_parameters``, ...).
    """

    def __init__(self, folder: str | Path, cluster: str | None = None, poll: float = 1.0,
                 parameters: Mapping[str, Any] | None = None) -> None:
        try:
            import submitit
        except ImportError:
            raise MissingExtraError("--launcher submitit needs submitit: pip install submitit") from None
        self.executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
        params = dict(parameters or {})
        try:
            self.executor.update_parameters(**params)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"submitit parameters {sorted(params)}: {e}") from None
        self.poll = poll
        self._jobs: dict[Any, Future] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._watcher = threading.Thread(target=self._watch, name="dgconv-submitit-watcher", daemon=True)
        self._watcher.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        fut: Future = Future()
        job = self.executor.submit(fn, *args)
        with self._lock:
            self._jobs[job] = fut
        fut.job_id = job.job_id  # type: ignore[attr-defined]
        return fut

    def _settle(self, job: Any) -> None:
        """Complete ``job``'s Future with its result, or -1 when it ended without one (once)."""
        with self._lock:
            fut = self._jobs.pop(job, None)
        if fut is None:
            return
        try:
            fut.set_result(job.result())
        except Exception:  # noqa: BLE001 - cancelled, pre-empted, killed: the run failed, its checkpoint stays
            fut.set_result(-1)

    def _watch(self) -> None:
        while not self._closed.wait(self.poll):
            with self._lock:
                jobs = list(self._jobs)
            for job in jobs:
                if job.done():
                    self._settle(job)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        if cancel_futures:
            self.stop()
            return
        while wait and self._jobs and not self._closed.is_set():
            self._closed.wait(self.poll)
        self._closed.set()

    def stop(self) -> None:
        """Cancel every job still queued or running (a running one stops at a checkpoint) and wait for them."""
        with self._lock:
            jobs = list(self._jobs)
            futures = list(self._jobs.values())
        for job in jobs:
            try:
                job.cancel(check=False)
            except Exception:  # noqa: BLE001 - already gone
                pass
        for job in jobs:
            try:
                job.wait()
            except Exception:  # noqa: BLE001 - a cancelled job has no result
                pass
            self._settle(job)
        wait_all(futures)  # the watcher may be settling some of them (reading a result that is not there takes a while)
        self._closed.set()


def make_launcher(name: str = "local", folder: str | Path | None = None, cluster: str | None = None,
                  parameters: Mapping[str, Any] | None = None) -> Callable[[int], Any]:
    """A factory of pools of ``parallel`` runs for ``run_sweep``: ``"local"`` (:func:`LocalPool`) or
    ``"submitit"`` (:class:`SubmititPool` with ``folder``, ``cluster`` and ``parameters``)."""
    if name == "local":
        if parameters:
            raise ConfigError(f"cluster parameters {sorted(parameters)} need --launcher submitit")
        return LocalPool
    if name == "submitit":
        if folder is None:
            raise ConfigError("the submitit launcher needs a folder for its job files")
        if cluster not in (None, "slurm", "local"):
            raise ConfigError(f"submitit cluster must be slurm or local (or unset: Slurm where found), got {cluster!r}")
        return lambda parallel: SubmititPool(folder, cluster, parameters=parameters)
    raise ConfigError(f"unknown launcher {name!r}: choose from {list(LAUNCHERS)}")
