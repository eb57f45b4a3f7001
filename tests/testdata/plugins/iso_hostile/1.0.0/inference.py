"""Tries, through libc, what a plugin must not do; answers whether the call went through."""

import ctypes
import os

O_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC


class _SockaddrIn(ctypes.Structure):
    _fields_ = (
        ("family", ctypes.c_ushort),
        ("port", ctypes.c_uint16),
        ("addr", ctypes.c_uint32),
        ("zero", ctypes.c_ubyte * 8),
    )


def load(context):
    libc = ctypes.CDLL(None, use_errno=True)  # loaded now: the guard refuses new libraries later
    return {"libc": libc, "scratch": str(context.scratch_dir), "tmpdir": os.environ.get("TMPDIR", "")}


def _write(libc, target):
    fd = libc.open(target.encode(), O_FLAGS, 0o644)
    if fd < 0:
        return False, ctypes.get_errno()
    libc.write(fd, b"escaped", 7)
    libc.close(fd)
    return True, 0


def _read(libc, target):
    fd = libc.open(target.encode(), os.O_RDONLY)
    if fd < 0:
        return False, ctypes.get_errno()
    buffer = ctypes.create_string_buffer(64)
    count = libc.read(fd, buffer, 64)
    libc.close(fd)
    return count > 0, 0


def _shell(libc, target):
    status = libc.system(f"echo escaped > '{target}'".encode())
    return status == 0, status


def _connect(libc, target):
    port = int(target)
    fd = libc.socket(2, 1, 0)  # AF_INET, SOCK_STREAM
    address = _SockaddrIn(2, ((port & 0xFF) << 8) | (port >> 8), 0x0100007F)  # 127.0.0.1, network order
    result = libc.connect(fd, ctypes.byref(address), ctypes.sizeof(address))
    code = ctypes.get_errno() if result != 0 else 0
    libc.close(fd)
    return result == 0, code


ACTIONS = {"write": _write, "read": _read, "shell": _shell, "connect": _connect}


def infer(state, frame):
    action, target = frame.camera_id or "", frame.frame_id or ""
    if action == "scratch":
        action, target = "write", os.path.join(state["scratch"], "allowed.txt")
    if action not in ACTIONS:
        action, target, done, code = "none", "", False, 0
    else:
        done, code = ACTIONS[action](state["libc"], target)
    answer = {"action": action, "target": target, "done": bool(done), "errno": int(code)}
    return {**answer, "tmpdir": state["tmpdir"]}
