"""A function run in a second process, for work that can use a spare core: its output goes to a log.

    job = BackgroundJob(build_something, (preset, data_dir), log="runs/x/something.log")
    ...                                   # the parent works on meanwhile
    job.event.set()                       # a signal either side can set or wait for (`events=n`: job.events)
    seconds = job.wait()                  # raises JobError with the log's tail if the job failed

Used by `minimost run` (the speech kit beside stage 0) and by `minimost synth` (the judge and the
speech tasks beside the unit encoder and the vocoder). The child is a *spawned* interpreter: it
inherits no torch threads, locks or open datasets from the parent, and it runs on one torch thread,
so each process keeps to its own core (on a 2-core machine, 2 threads per process were 3-16x slower
per step than 1: docs/units.md, docs/judge.md).
"""

from __future__ import annotations

import os
import time
from pathlib import Path


class JobError(RuntimeError):
    """The background process failed; the message carries the end of its log."""


def _exit_with_parent(parent_pid: int, every_s: float = 2.0) -> None:
    """End this process soon after its parent is gone. A parent killed outright (SIGKILL, a notebook
    kernel restarted) cannot stop its job, and an orphaned job would hold a core for many minutes."""
    import threading

    def watch():
        while True:
            time.sleep(every_s)
            if os.getppid() != parent_pid:      # re-parented: the parent has died
                os._exit(3)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _job_main(target, args: tuple, log_path: str, events: tuple, parent_pid: int | None = None) -> None:
    """Body of the child: one torch thread, stdout and stderr to the log, `target(*args, *events)`."""
    import sys
    import traceback

    import torch
    if parent_pid is not None:
        _exit_with_parent(parent_pid)
    with open(log_path, "a", buffering=1) as log:
        sys.stdout = sys.stderr = log
        try:
            torch.set_num_threads(1)
            target(*args, *events)
        except BaseException:
            traceback.print_exc(file=log)   # the parent shows this log's tail
            raise SystemExit(1) from None


class BackgroundJob:
    """`target(*args, *job.events)` in a spawned process. `target` must be a module-level function (it
    is pickled by reference); `job.events` are `events` `multiprocessing.Event`s shared with the parent
    (`job.event` is the first), signals either side can set or wait for.
    Not a daemon: the job may start worker processes of its own (speech synthesis does); it ends by
    itself within seconds if the parent dies without stopping it."""

    def __init__(self, target, args: tuple, log, what: str = "the background job", hint: str = "",
                 events: int = 1):
        import multiprocessing as mp
        ctx = mp.get_context("spawn")
        self.log, self.what, self.hint, self.t0 = Path(log), what, hint, time.perf_counter()
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.events = tuple(ctx.Event() for _ in range(events))
        self.event = self.events[0]
        self.process = ctx.Process(target=_job_main,
                                   args=(target, tuple(args), str(self.log), self.events, os.getpid()))
        # Progress bars go to the log; tqdm reads TQDM_* from the environment when it is imported, so
        # the child (which inherits this environment) redraws a bar every 20 s rather than every 0.1 s.
        previous = os.environ.get("TQDM_MININTERVAL")
        os.environ["TQDM_MININTERVAL"] = "20"
        try:
            self.process.start()
        finally:
            if previous is None:
                del os.environ["TQDM_MININTERVAL"]
            else:
                os.environ["TQDM_MININTERVAL"] = previous

    def alive(self) -> bool:
        return self.process.is_alive()

    def stop(self) -> None:
        """End the job early (the parent failed or was interrupted); jobs write their caches atomically."""
        if self.process.is_alive():
            self.process.terminate()
        self.process.join()

    def wait_for_event(self) -> None:
        """Block until the job sets `event`, or ends (a failed job raises `JobError`)."""
        while not self.event.wait(timeout=1.0):
            if not self.process.is_alive():
                self.wait()   # raises with the log's tail unless it succeeded
                return

    def wait(self) -> float:
        """Block until the job ends; its wall time in seconds. A failed job raises `JobError`."""
        self.process.join()
        if self.process.exitcode != 0:
            tail = ("\n".join(self.log.read_text().splitlines()[-20:]) if self.log.exists() else
                    "(no log: the process ended before it started the job. A script that starts it must keep "
                    "its top-level code under `if __name__ == \"__main__\":`, because a spawned process "
                    "imports the script again; its error is on this terminal above)")
            raise JobError(f"{self.what} failed in a second process (exit code {self.process.exitcode}); "
                           f"the end of {self.log}:\n{tail}" + (f"\n{self.hint}" if self.hint else ""))
        return round(time.perf_counter() - self.t0, 1)
