"""Runs a command as if the kernel had no Landlock: a seccomp filter answers ENOSYS to its calls.

``python tests/no_landlock.py COMMAND...`` installs the filter (inherited by every child, as a
container runtime's seccomp profile would be) and execs COMMAND. Older Jetson kernels and Docker
engines whose default seccomp profile predates Landlock look like this to the stub.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

_LANDLOCK_FIRST, _LANDLOCK_LAST = 444, 446  # create_ruleset, add_rule, restrict_self
_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}  # AUDIT_ARCH_*
_LD_ABS, _JEQ, _JGE, _JGT, _RET = 0x20, 0x15, 0x35, 0x25, 0x06
_RET_ALLOW, _RET_ERRNO, _ENOSYS = 0x7FFF0000, 0x00050000, 38
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2


class _Instruction(ctypes.Structure):
    _fields_ = (
        ("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)
    )


class _Program(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Instruction)))


def install() -> None:
    program = [
        (_LD_ABS, 0, 0, 4),  # seccomp_data.arch
        (_JEQ, 0, 4, _ARCH[platform.machine()]),  # another ABI: allow
        (_LD_ABS, 0, 0, 0),  # seccomp_data.nr
        (_JGE, 0, 2, _LANDLOCK_FIRST),
        (_JGT, 1, 0, _LANDLOCK_LAST),
        (_RET, 0, 0, _RET_ERRNO | _ENOSYS),
        (_RET, 0, 0, _RET_ALLOW),
    ]
    instructions = (_Instruction * len(program))(*[_Instruction(*i) for i in program])
    filter_program = _Program(len(program), instructions)
    libc = ctypes.CDLL(None, use_errno=True)
    calls = (
        (_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
        (_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(filter_program)),
    )
    for call in calls:
        if libc.prctl(*call) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))


if __name__ == "__main__":
    install()
    os.execvp(sys.argv[1], sys.argv[1:])
