"""What every process the daemon forks (parse worker, couriers, the templates' compile) does first."""
from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel kill this process when its parent dies (``PR_SET_PDEATHSIG``), and exit if
    that already happened (the parent died before this line). libc's ``prctl`` is found among the
    running program's symbols (``CDLL(None)``): no search for the library in a new process."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent_pid:
        os._exit(0)
