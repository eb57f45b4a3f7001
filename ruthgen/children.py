"""Child processes that end with their parent (the embedded tritonserver, the sidecar of ``ruthgen up``).

:func:`bound_to_parent` puts a command line behind a tiny launcher that asks Linux for SIGTERM when
the parent dies, so that a killed ``ruthgen up`` or test run leaves no server behind.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

_PR_SET_PDEATHSIG = 1

# Runs in the child, then becomes the command: the death signal survives ``exec``. A ``preexec_fn``
# would do the same in fewer steps, but it makes ``subprocess`` fork the whole parent, and gRPC's
# fork handlers (grpcio >= 1.80, grpc/grpc#43055) then abort the child now and then with
# "epoll_wait error: Bad file descriptor" before it reaches ``exec``.
_BIND_TO_PARENT = (
    "import ctypes, os, signal, sys\n"
    f"ctypes.CDLL(None).prctl({_PR_SET_PDEATHSIG}, signal.SIGTERM)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(128 + signal.SIGTERM)\n"
    "os.execvp(sys.argv[2], sys.argv[2:])\n"
)


def bound_to_parent(command: Sequence[str]) -> list[str]:
    """``command`` behind a tiny launcher that asks Linux for SIGTERM when this process dies.

    The signal follows the thread that starts the child: call it from a thread that lives as long
    as the child should (the main thread, usually).
    """
    if not sys.platform.startswith("linux"):
        return list(command)
    return [sys.executable, "-I", "-S", "-c", _BIND_TO_PARENT, str(os.getpid()), *command]
