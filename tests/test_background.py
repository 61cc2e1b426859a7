"""minimost.background: a job in a spawned process ends by itself when its parent dies."""

import os
import signal
import subprocess
import sys
import time

import pytest

PARENT = '''
import sys
import time

from minimost.background import BackgroundJob


def sleep_long(seconds, event):
    event.set()
    time.sleep(seconds)


if __name__ == "__main__":
    job = BackgroundJob(sleep_long, (300,), sys.argv[1])
    job.wait_for_event()
    print(job.process.pid, flush=True)
    time.sleep(300)
'''


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:                       # no /proc (macOS): ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_a_job_ends_soon_after_its_parent_is_killed(tmp_path):
    # A parent killed outright (SIGKILL, a notebook kernel restarted) cannot stop its job; without the
    # watch in `_job_main` the job would train on, holding a core, for many minutes.
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script), str(tmp_path / "job.log")],
                              stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert _alive(child)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(child):
        os.kill(child, signal.SIGKILL)
        pytest.fail("the job outlived its parent by 30 s")
