"""Landlock (Linux LSM) through raw syscalls via ctypes: filesystem, TCP and scoping.

ABI 1 (5.13) fences the filesystem, 2 adds REFER, 3 TRUNCATE, 4 TCP bind/connect,
5 IOCTL_DEV, 6 scoping of abstract unix sockets and signals. A ruleset confines the
calling thread only (before ABI 8's TSYNC), so :func:`restrict` must run while the
process is single-threaded; the caller (:mod:`node.runtime.lockdown`) checks that.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import stat
import struct
from collections.abc import Iterable
from typing import Final

_SYS_CREATE: Final = 444
_SYS_ADD_RULE: Final = 445
_SYS_RESTRICT: Final = 446
_CREATE_RULESET_VERSION: Final = 1
_RULE_PATH_BENEATH: Final = 1

EXECUTE: Final = 1 << 0
WRITE_FILE: Final = 1 << 1
READ_FILE: Final = 1 << 2
READ_DIR: Final = 1 << 3
REMOVE_DIR: Final = 1 << 4
REMOVE_FILE: Final = 1 << 5
MAKE_CHAR: Final = 1 << 6
MAKE_DIR: Final = 1 << 7
MAKE_REG: Final = 1 << 8
MAKE_SOCK: Final = 1 << 9
MAKE_FIFO: Final = 1 << 10
MAKE_BLOCK: Final = 1 << 11
MAKE_SYM: Final = 1 << 12
REFER: Final = 1 << 13
TRUNCATE: Final = 1 << 14
IOCTL_DEV: Final = 1 << 15

NET_BIND_TCP: Final = 1 << 0
NET_CONNECT_TCP: Final = 1 << 1
SCOPE_ABSTRACT_UNIX: Final = 1 << 0
SCOPE_SIGNAL: Final = 1 << 1

READ: Final = EXECUTE | READ_FILE | READ_DIR
FILE_READ: Final = EXECUTE | READ_FILE  # for rules on single files
_WRITE_ABI1: Final = (
    WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | MAKE_SYM | MAKE_FIFO | MAKE_SOCK
)

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long


@functools.cache
def abi_version() -> int:
    """The kernel's Landlock ABI (0 if Landlock is unsupported or disabled).

    Asked once per process (it cannot change while the kernel runs); forked children
    inherit the answer.
    """
    if os.uname().machine not in ("x86_64", "aarch64"):
        return 0
    rc = _libc.syscall(_SYS_CREATE, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return int(rc) if rc > 0 else 0


def handled_fs(abi: int) -> int:
    """Every filesystem right the given ABI knows (all of them are denied unless granted)."""
    mask = (1 << 13) - 1
    if abi >= 2:
        mask |= REFER
    if abi >= 3:
        mask |= TRUNCATE
    if abi >= 5:
        mask |= IOCTL_DEV
    return mask


def write_rights(abi: int) -> int:
    """Rights of a read-write directory (no device nodes, no REFER across dirs)."""
    rights = READ | _WRITE_ABI1
    if abi >= 3:
        rights |= TRUNCATE
    return rights


class LandlockError(OSError):
    """A Landlock syscall failed."""


def _check(rc: int, what: str) -> int:
    if rc < 0:
        err = ctypes.get_errno()
        raise LandlockError(err, f"landlock {what}: {os.strerror(err)}")
    return rc


def restrict(
    read: Iterable[str],
    write: Iterable[str],
    *,
    devices: Iterable[str] = (),
    deny_tcp: bool = True,
    scope: bool = True,
) -> int:
    """Confine this thread (and future children) to the given paths; return the ABI used.

    ``read`` paths get read+execute, ``write`` paths read-write, ``devices`` read-write
    plus ioctl (GPU nodes). Missing paths are skipped. TCP bind/connect are denied from
    ABI 4, abstract unix sockets and signals are scoped from ABI 6.
    """
    abi = abi_version()
    if abi < 1:
        raise LandlockError(95, "landlock is not available")
    fs = handled_fs(abi)
    net = (NET_BIND_TCP | NET_CONNECT_TCP) if (deny_tcp and abi >= 4) else 0
    scoped = (SCOPE_ABSTRACT_UNIX | SCOPE_SIGNAL) if (scope and abi >= 6) else 0
    if abi >= 6:
        attr = struct.pack("=QQQ", fs, net, scoped)
    elif abi >= 4:
        attr = struct.pack("=QQ", fs, net)
    else:
        attr = struct.pack("=Q", fs)
    buf = ctypes.create_string_buffer(attr, len(attr))
    fd = _check(_libc.syscall(_SYS_CREATE, buf, ctypes.c_size_t(len(attr)), 0), "create")
    try:
        rules = [(p, READ) for p in read] + [(p, write_rights(abi)) for p in write]
        rules += [(p, READ | WRITE_FILE | (IOCTL_DEV if abi >= 5 else 0)) for p in devices]
        for path, rights in rules:
            _add_path(fd, path, rights, fs)
        _check(_libc.syscall(_SYS_RESTRICT, fd, 0), "restrict_self")
    finally:
        os.close(fd)
    return abi


def _add_path(ruleset: int, path: str, rights: int, handled: int) -> None:
    try:
        pfd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not stat.S_ISDIR(os.fstat(pfd).st_mode):  # what was opened, not a second lookup
            rights &= FILE_READ | WRITE_FILE | TRUNCATE | IOCTL_DEV
        attr = struct.pack("=Qi", rights & handled, pfd)
        buf = ctypes.create_string_buffer(attr, len(attr))
        _check(_libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, buf, 0), f"add {path}")
    finally:
        os.close(pfd)
