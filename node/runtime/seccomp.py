"""seccomp-bpf filters built by hand (ctypes, no libseccomp), installed with TSYNC.

Three profiles, all x86_64 only (elsewhere :func:`supported` is False and the layer is
reported missing):

* ``zygote`` (deny-list): no sockets, exec, ptrace, namespaces, mounts, set*id, bpf,
  io_uring, keyctl, perf, kexec, modules, userfaultfd; ``clone`` without namespace
  flags is allowed, because the zygote forks a child per job.
* ``job`` (deny-list, the GPU lease worker's): the zygote list plus every way to make a
  process (``fork``, ``vfork``, ``clone`` without ``CLONE_THREAD``), ``memfd_create``,
  ``pidfd_*``; ``kill`` of other processes is left to the pid namespace and Landlock's
  signal scope.
* ``job-allow`` (default-deny, CPU fork-mode job processes): the ``job`` deny-list
  first (same EPERM answers), then only :data:`JOB_ALLOW` (traced from real jobs of
  every catalog model, a v2 program, 1 and 2 threads, error paths), ``ioctl`` only for
  ``TCGETS``, ``prctl`` only for thread names; anything else answers ENOSYS (so libc
  takes its fallbacks).

``clone3`` answers ENOSYS so glibc falls back to ``clone``, whose flags a filter can
read. Foreign architectures and the x32 ABI are killed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import os
import struct
from typing import Final

_SYS_SECCOMP: Final = 317
_SET_MODE_FILTER: Final = 1
_FLAG_TSYNC: Final = 1
_PR_SET_NO_NEW_PRIVS: Final = 38

_LD_W_ABS: Final = 0x20
_JEQ: Final = 0x15
_JSET: Final = 0x45
_JGE: Final = 0x35
_RET: Final = 0x06
_KILL_PROCESS: Final = 0x80000000
_ALLOW: Final = 0x7FFF0000
_ERRNO: Final = 0x00050000
_ARCH_X86_64: Final = 0xC000003E
_X32_BIT: Final = 0x40000000
_OFF_NR: Final = 0
_OFF_ARCH: Final = 4
_OFF_ARG0: Final = 16

CLONE_THREAD: Final = 0x00010000
#: CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET|NEWTIME
CLONE_NS_MASK: Final = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
CLONE_NS_MASK_ALL: Final = CLONE_NS_MASK | 0x20000000 | 0x40000000 | 0x00000080

SYS_CLONE: Final = 56
SYS_CLONE3: Final = 435

#: x86_64 numbers denied (EPERM) in both profiles.
ZYGOTE_DENY: Final = {
    "socket": 41, "connect": 42, "accept": 43, "bind": 49, "listen": 50, "socketpair": 53,
    "accept4": 288, "execve": 59, "execveat": 322, "ptrace": 101, "process_vm_readv": 310,
    "process_vm_writev": 311, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
    "unshare": 272, "setns": 308, "bpf": 321, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "userfaultfd": 323, "keyctl": 250, "add_key": 248,
    "request_key": 249, "perf_event_open": 298, "kexec_load": 246, "kexec_file_load": 320,
    "init_module": 175, "finit_module": 313, "delete_module": 176, "open_by_handle_at": 304,
    "name_to_handle_at": 303, "acct": 163, "swapon": 167, "swapoff": 168, "reboot": 169,
    "sethostname": 170, "setdomainname": 171, "iopl": 172, "ioperm": 173, "quotactl": 179,
    "setuid": 105, "setgid": 106, "setreuid": 113, "setregid": 114, "setgroups": 116,
    "setresuid": 117, "setresgid": 119, "setfsuid": 122, "setfsgid": 123, "fanotify_init": 300,
    "pidfd_getfd": 438, "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431,
    "fsmount": 432, "fspick": 433, "mount_setattr": 442, "lookup_dcookie": 212,
    "personality": 135, "vhangup": 153, "syslog": 103, "add_key2": 248,
}  # fmt: skip
#: Extra numbers denied in the ``job`` profile.
JOB_DENY: Final = {
    "fork": 57, "vfork": 58, "memfd_create": 319, "pidfd_open": 434, "pidfd_send_signal": 424,
    "memfd_secret": 447, "process_madvise": 440, "kcmp": 312,
}  # fmt: skip

#: What a CPU job process may call after its lockdown (``job-allow``). Traced with
#: ``strace -f`` on a zygote's children (docs/runtime.md §3), plus the calls libc and
#: Python make on paths the trace did not take (exit, signal return, sleeps, stat
#: variants, polling).
JOB_ALLOW: Final = {
    "read": 0, "write": 1, "open": 2, "close": 3, "stat": 4, "fstat": 5, "lstat": 6,
    "poll": 7, "lseek": 8, "mmap": 9, "mprotect": 10, "munmap": 11, "brk": 12,
    "rt_sigaction": 13, "rt_sigprocmask": 14, "rt_sigreturn": 15, "pread64": 17,
    "pwrite64": 18, "readv": 19, "writev": 20, "access": 21, "select": 23,
    "sched_yield": 24, "mremap": 25, "madvise": 28, "dup": 32, "nanosleep": 35,
    "getpid": 39, "exit": 60, "uname": 63, "fcntl": 72, "fsync": 74, "fdatasync": 75,
    "ftruncate": 77, "getcwd": 79, "rename": 82, "mkdir": 83, "rmdir": 84, "unlink": 87,
    "readlink": 89, "umask": 95, "gettimeofday": 96, "getrlimit": 97, "sysinfo": 99,
    "getuid": 102, "getgid": 104, "geteuid": 107, "getegid": 108, "getppid": 110,
    "getresuid": 118, "getresgid": 120, "sigaltstack": 131, "statfs": 137,
    "fstatfs": 138, "setrlimit": 160, "gettid": 186, "time": 201, "futex": 202,
    "sched_getaffinity": 204, "getdents64": 217, "restart_syscall": 219,
    "fadvise64": 221, "clock_gettime": 228, "clock_getres": 229, "clock_nanosleep": 230,
    "exit_group": 231, "epoll_wait": 232, "epoll_ctl": 233, "tgkill": 234,
    "openat": 257, "mkdirat": 258, "newfstatat": 262, "unlinkat": 263, "renameat": 264,
    "readlinkat": 267, "faccessat": 269, "pselect6": 270, "ppoll": 271,
    "set_robust_list": 273, "epoll_pwait": 281, "epoll_create1": 291, "dup3": 292,
    "pipe2": 293, "prlimit64": 302, "getcpu": 309, "renameat2": 316, "getrandom": 318,
    "statx": 332, "rseq": 334, "close_range": 436, "faccessat2": 439,
}  # fmt: skip
SYS_IOCTL: Final = 16
SYS_PRCTL: Final = 157
TCGETS: Final = 0x5401
PR_SET_NAME: Final = 15
PR_GET_NAME: Final = 16
_OFF_ARG1: Final = 24

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.prctl.restype = ctypes.c_int


class SeccompError(OSError):
    """Installing the filter failed."""


def supported() -> bool:
    """True where this module has a syscall table (x86_64) and the kernel has seccomp."""
    if os.uname().machine != "x86_64":
        return False
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            return any(line.startswith("Seccomp:") for line in f)
    except OSError:
        return False


def _ins(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def build(profile: str) -> bytes:
    """The BPF program (raw ``sock_filter`` array) of ``profile``.

    ``zygote``, ``job`` (deny-lists) or ``job-allow`` (default-deny, see the module doc).
    """
    if profile not in ("zygote", "job", "job-allow"):
        raise ValueError(profile)
    deny = dict(ZYGOTE_DENY)
    if profile != "zygote":
        deny.update(JOB_DENY)
    eperm = _ERRNO | errno.EPERM
    prog = [
        _ins(_LD_W_ABS, 0, 0, _OFF_ARCH),
        _ins(_JEQ, 1, 0, _ARCH_X86_64),
        _ins(_RET, 0, 0, _KILL_PROCESS),
        _ins(_LD_W_ABS, 0, 0, _OFF_NR),
        _ins(_JGE, 0, 1, _X32_BIT),
        _ins(_RET, 0, 0, _KILL_PROCESS),
        _ins(_JEQ, 0, 1, SYS_CLONE3),
        _ins(_RET, 0, 0, _ERRNO | errno.ENOSYS),
    ]
    for nr in sorted(set(deny.values())):
        prog += [_ins(_JEQ, 0, 1, nr), _ins(_RET, 0, 0, eperm)]
    if profile == "zygote":
        clone = [
            _ins(_LD_W_ABS, 0, 0, _OFF_ARG0),
            _ins(_JSET, 0, 1, CLONE_NS_MASK_ALL),
            _ins(_RET, 0, 0, eperm),
            _ins(_RET, 0, 0, _ALLOW),
        ]
    else:
        clone = [
            _ins(_LD_W_ABS, 0, 0, _OFF_ARG0),
            _ins(_JSET, 0, 1, CLONE_NS_MASK_ALL),
            _ins(_RET, 0, 0, eperm),
            _ins(_JSET, 0, 1, CLONE_THREAD),
            _ins(_RET, 0, 0, _ALLOW),
            _ins(_RET, 0, 0, eperm),
        ]
    prog += [_ins(_JEQ, 0, len(clone), SYS_CLONE), *clone]
    if profile != "job-allow":
        return b"".join([*prog, _ins(_RET, 0, 0, _ALLOW)])
    # the syscall number is still in A: every branch above returned or fell through
    ioctl = [  # isatty() only
        _ins(_LD_W_ABS, 0, 0, _OFF_ARG1),
        _ins(_JEQ, 0, 1, TCGETS),
        _ins(_RET, 0, 0, _ALLOW),
        _ins(_RET, 0, 0, _ERRNO | errno.ENOTTY),
    ]
    prctl = [  # thread names only
        _ins(_LD_W_ABS, 0, 0, _OFF_ARG0),
        _ins(_JEQ, 1, 0, PR_SET_NAME),
        _ins(_JEQ, 0, 1, PR_GET_NAME),
        _ins(_RET, 0, 0, _ALLOW),
        _ins(_RET, 0, 0, eperm),
    ]
    prog += [_ins(_JEQ, 0, len(ioctl), SYS_IOCTL), *ioctl]
    prog += [_ins(_JEQ, 0, len(prctl), SYS_PRCTL), *prctl]
    for nr in sorted(set(JOB_ALLOW.values())):
        prog += [_ins(_JEQ, 0, 1, nr), _ins(_RET, 0, 0, _ALLOW)]
    prog.append(_ins(_RET, 0, 0, _ERRNO | errno.ENOSYS))
    return b"".join(prog)


def no_new_privs() -> None:
    """Set PR_SET_NO_NEW_PRIVS (required by seccomp and Landlock for non-root)."""
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise SeccompError(err, f"prctl(NO_NEW_PRIVS): {os.strerror(err)}")


@functools.cache
def _program(profile: str) -> tuple[ctypes.Array[ctypes.c_char], ctypes.Array[ctypes.c_char]]:
    """``profile``'s BPF code and its ``sock_fprog``, as C buffers (built once per process).

    The program depends only on the profile, so a zygote that calls :func:`prepare`
    before it forks saves every job child building it again (~0.25 ms of Python and
    ~50 copy-on-write page faults per child here); the bytes are the same.
    """
    code = build(profile)
    buf = ctypes.create_string_buffer(code, len(code))
    prog = struct.pack("=HxxxxxxQ", len(code) // 8, ctypes.addressof(buf))
    return buf, ctypes.create_string_buffer(prog, len(prog))


def prepare(profile: str) -> None:
    """Build ``profile`` now, so that processes forked from this one install it as is."""
    _program(profile)


def install(profile: str) -> None:
    """Install ``profile`` on every thread of this process (TSYNC)."""
    if os.uname().machine != "x86_64":  # (no /proc check: a locked-down child has no /proc)
        raise SeccompError(errno.ENOSYS, "no seccomp syscall table for this architecture")
    _, pbuf = _program(profile)
    no_new_privs()
    rc = _libc.syscall(_SYS_SECCOMP, _SET_MODE_FILTER, _FLAG_TSYNC, pbuf)
    if rc != 0:
        err = ctypes.get_errno()
        raise SeccompError(err, f"seccomp(SET_MODE_FILTER): {os.strerror(err)}")
