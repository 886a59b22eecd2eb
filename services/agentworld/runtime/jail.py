"""Kernel-level confinement for untrusted code (environment apps and verifiers): nothing here relies on Python.

Standard library only, so that the verifier zygote (`python -I -S`) can load this file by path. The layers, each
applied where the kernel and our privileges allow it (callers record what took effect in a `Layers`):

- namespaces (`enter_namespaces`): network (no interfaces: no network at all), PID (no view of other processes),
  mount, IPC and UTS; as an unprivileged user, inside a new user namespace when the kernel allows one;
- a minimal root (`pivot_to_minimal_root`): a tmpfs holding read-only binds of only what Python needs, the
  directories the sandbox may write, a private /proc and a few device nodes; the host's files are gone;
- an unprivileged uid and gid with no supplementary groups (`drop_privileges`), and no_new_privs;
- Landlock (`landlock`): reads only beneath an allow-list, writes only beneath given directories (which cannot be
  listed), no TCP bind or connect, no signals or abstract UNIX sockets across the sandbox boundary;
- seccomp-bpf (`install_seccomp`): no exec, no new sockets, no ptrace or cross-process memory access, no mounts,
  namespaces, keyrings, bpf or io_uring; optionally no process creation, no signals to other processes, and no file
  opened for writing;
- rlimits (`set_rlimits`): address space, file size, open files, core dumps.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import signal
import struct
from dataclasses import dataclass, field

# ----------------------------------------------------------------------------------------------- syscalls
_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
_libc.mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_libc.umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_libc.prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)

MACHINE = platform.machine()
# Syscall numbers by architecture (x86_64, aarch64); calls a table lacks do not exist there.
_X86_64 = dict(
    open=2, socket=41, connect=42, accept=43, bind=49, listen=50, clone=56, fork=57, vfork=58, execve=59, kill=62,
    truncate=76, rename=82, mkdir=83, rmdir=84, creat=85, link=86, unlink=87, symlink=88, chmod=90, fchmod=91,
    chown=92, fchown=93, lchown=94, ptrace=101, syslog=103, setuid=105, setgid=106, setreuid=113, setregid=114,
    setgroups=116, setresuid=117, setresgid=119, setfsuid=122, setfsgid=123, rt_sigqueueinfo=129, utime=132,
    mknod=133, uselib=134, personality=135, vhangup=153, modify_ldt=154, pivot_root=155, chroot=161, acct=163,
    mount=165, umount2=166, swapon=167, swapoff=168, reboot=169, sethostname=170, setdomainname=171, iopl=172,
    ioperm=173, init_module=175, delete_module=176, quotactl=179, setxattr=188, lsetxattr=189, fsetxattr=190,
    removexattr=197, lremovexattr=198, fremovexattr=199, tkill=200, lookup_dcookie=212, tgkill=234, utimes=235,
    kexec_load=246, add_key=248, request_key=249, keyctl=250, openat=257, mkdirat=258, mknodat=259, fchownat=260,
    futimesat=261, unlinkat=263, renameat=264, linkat=265, symlinkat=266, fchmodat=268, unshare=272, utimensat=280,
    accept4=288, rt_tgsigqueueinfo=297, perf_event_open=298, name_to_handle_at=303, open_by_handle_at=304,
    setns=308, process_vm_readv=310, process_vm_writev=311, kcmp=312, finit_module=313, renameat2=316, bpf=321,
    execveat=322, userfaultfd=323, kexec_file_load=320,
)
_AARCH64 = dict(
    setxattr=5, lsetxattr=6, fsetxattr=7, removexattr=14, lremovexattr=15, fremovexattr=16, mknodat=33, mkdirat=34,
    unlinkat=35, symlinkat=36, linkat=37, renameat=38, umount2=39, mount=40, pivot_root=41, truncate=45, chroot=51,
    fchmod=52, fchmodat=53, fchownat=54, fchown=55, openat=56, vhangup=58, quotactl=60, utimensat=88, acct=89,
    personality=92, unshare=97, kexec_load=104, init_module=105, delete_module=106, syslog=116, ptrace=117, kill=129,
    tkill=130, tgkill=131, rt_sigqueueinfo=138, reboot=142, setregid=143, setgid=144, setreuid=145, setuid=146,
    setresuid=147, setresgid=149, setfsuid=151, setfsgid=152, setgroups=159, sethostname=161, setdomainname=162,
    socket=198, bind=200, listen=201, accept=202, connect=203, add_key=217, request_key=218, keyctl=219, clone=220,
    execve=221, swapon=224, swapoff=225, rt_tgsigqueueinfo=240, perf_event_open=241, accept4=242,
    name_to_handle_at=264, open_by_handle_at=265, setns=268, process_vm_readv=270, process_vm_writev=271, kcmp=272,
    finit_module=273, renameat2=276, bpf=280, execveat=281, userfaultfd=282, kexec_file_load=294,
)
# Numbered alike on every architecture (added after the tables were unified).
_COMMON = dict(
    pidfd_send_signal=424, io_uring_setup=425, io_uring_enter=426, io_uring_register=427, open_tree=428,
    move_mount=429, fsopen=430, fsconfig=431, fsmount=432, fspick=433, pidfd_open=434, clone3=435, openat2=437,
    pidfd_getfd=438, process_madvise=440, mount_setattr=442, landlock_create_ruleset=444, landlock_add_rule=445,
    landlock_restrict_self=446, fchmodat2=452,
)
_TABLES = {"x86_64": (_X86_64, 0xC000003E), "aarch64": (_AARCH64, 0xC00000B7)}
SYSCALLS: dict[str, int] = {**_TABLES.get(MACHINE, ({}, 0))[0], **_COMMON} if MACHINE in _TABLES else {}


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _syscall(name: str, *args: object) -> int:
    return _check(_libc.syscall(SYSCALLS[name], *args), name)


# --------------------------------------------------------------------------------------------- the record
@dataclass
class Layers:
    """Which confinement layers took effect, and why the others did not (for the logs and GetStats)."""

    applied: list[str] = field(default_factory=list)
    missing: dict[str, str] = field(default_factory=dict)

    def add(self, name: str) -> None:
        if name not in self.applied:
            self.applied.append(name)
        self.missing.pop(name, None)

    def lack(self, name: str, why: str) -> None:
        if name not in self.applied:
            self.missing[name] = why

    def as_dict(self) -> dict:
        return {"applied": list(self.applied), "missing": dict(self.missing)}


# ---------------------------------------------------------------------------------------------- processes
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38


def prctl(option: int, arg: int = 0) -> None:
    _check(_libc.prctl(option, arg, 0, 0, 0), f"prctl({option})")


def die_with_parent(expected_parent: int, sig: int = signal.SIGKILL) -> None:
    """Ask for `sig` when the parent thread exits; exit now if it already has. (PID 1 of a new PID namespace
    sees its parent as 0.)"""
    prctl(PR_SET_PDEATHSIG, sig)
    if os.getppid() not in (expected_parent, 0):
        os._exit(1)


def set_dumpable(value: bool) -> None:
    """Non-dumpable: no core dumps, and /proc/PID/{mem,environ,fd} closed to processes of the same uid."""
    prctl(PR_SET_DUMPABLE, int(value))


def no_new_privs(layers: Layers) -> None:
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    layers.add("no_new_privs")


# -------------------------------------------------------------------------------------------- namespaces
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWCGROUP = 0x02000000
CLONE_THREAD = 0x00010000
NAMESPACE_FLAGS = (CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
                   | CLONE_NEWCGROUP)
_NS_LAYERS = (("netns", CLONE_NEWNET), ("pidns", CLONE_NEWPID), ("mountns", CLONE_NEWNS), ("ipcns", CLONE_NEWIPC))


def enter_namespaces(layers: Layers) -> bool:
    """New network, PID, mount, IPC and UTS namespaces for this process's children (PID) and itself (the rest).

    As root this needs nothing more; otherwise a user namespace is created first, mapping our uid and gid to 0
    inside, where the kernel allows unprivileged user namespaces. The caller must fork next: its first child is
    PID 1 of the new PID namespace. Returns True when the namespaces exist.
    """
    flags = CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS
    uid, gid = os.getuid(), os.getgid()
    use_userns = os.geteuid() != 0
    try:
        _check(_libc.unshare(flags | (CLONE_NEWUSER if use_userns else 0)), "unshare")
    except OSError as exc:
        why = f"unshare: {os.strerror(exc.errno or 0)}" + (
            " (unprivileged user namespaces are not allowed here)" if use_userns else "")
        for name, _ in _NS_LAYERS:
            layers.lack(name, why)
        return False
    if use_userns:
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"0 {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"0 {gid} 1")
        layers.add("userns")
    for name, _ in _NS_LAYERS:
        layers.add(name)
    return True


# ------------------------------------------------------------------------------------------ minimal root
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MNT_DETACH = 0x2
DEVICES = ("null", "zero", "random", "urandom")


@dataclass(frozen=True)
class Bind:
    source: str
    writable: bool = False


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    enc = lambda s: None if s is None else os.fsencode(s)  # noqa: E731
    _check(_libc.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), f"mount {target}")


def _bind(source: str, target: str, writable: bool, device: bool = False) -> None:
    if os.path.isdir(source):
        os.makedirs(target, mode=0o755, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        open(target, "a").close()
    _mount(source, target, None, MS_BIND | MS_REC)
    flags = MS_BIND | MS_REMOUNT | MS_NOSUID | (0 if device else MS_NODEV) | (0 if writable else MS_RDONLY)
    _mount(None, target, None, flags)


# What any Python needs from the host besides its own installation: shared libraries, the loader's cache, the time
# zone, and the harmless device nodes.
READ_SYSTEM_PATHS = ["/usr", "/lib", "/lib64", "/etc/ld.so.cache", "/etc/localtime", "/dev/null", "/dev/zero",
                     "/dev/random", "/dev/urandom"]


def system_binds() -> list[Bind]:
    """READ_SYSTEM_PATHS as read-only binds for a minimal root (symlinked ones are recreated as links instead)."""
    return [Bind(p) for p in READ_SYSTEM_PATHS
            if not p.startswith("/dev/") and os.path.exists(p) and not os.path.islink(p)]


def pivot_to_minimal_root(new_root: str, binds: list[Bind], layers: Layers) -> None:
    """Replace the filesystem view with a read-only tmpfs holding only `binds`, /dev nodes and a private /proc.

    Must run as PID 1 of a new PID namespace, inside a new mount namespace. `new_root` is an empty directory.
    Bind targets keep their host paths, so paths (Python's, the session files') mean the same inside.
    """
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", new_root, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0755,size=4m")
    for top in ("bin", "sbin", "lib", "lib64"):  # merged-/usr symlinks
        path = f"/{top}"
        if os.path.islink(path):
            os.symlink(os.readlink(path), f"{new_root}{path}")
    for bind in binds:
        if os.path.exists(bind.source):
            _bind(bind.source, new_root + os.path.abspath(bind.source), bind.writable)
    os.makedirs(f"{new_root}/dev", mode=0o755, exist_ok=True)
    for name in DEVICES:
        if os.path.exists(f"/dev/{name}"):
            _bind(f"/dev/{name}", f"{new_root}/dev/{name}", writable=True, device=True)
    os.makedirs(f"{new_root}/proc", mode=0o555, exist_ok=True)
    _mount("proc", f"{new_root}/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    old = f"{new_root}/.old-root"
    os.makedirs(old)
    _syscall("pivot_root", os.fsencode(new_root), os.fsencode(old))
    os.chdir("/")
    _check(_libc.umount2(b"/.old-root", MNT_DETACH), "umount old root")
    os.rmdir("/.old-root")
    _mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)
    layers.add("minimal_root")


# --------------------------------------------------------------------------------------------- identity
UNPRIVILEGED_ID = 65534  # nobody/nogroup


def world_readable(path: str) -> bool:
    """Whether any uid can reach `path`: every directory on the way is o+x (a minimal root makes this so)."""
    current = os.path.realpath(path)
    while True:
        try:
            if not os.stat(current).st_mode & 0o001:
                return False
        except OSError:
            return False
        if current == "/":
            return True
        current = os.path.dirname(current)


def drop_privileges(layers: Layers, uid: int = UNPRIVILEGED_ID, gid: int = UNPRIVILEGED_ID,
                    needs: list[str] = ()) -> None:
    """As real root (not root of a user namespace we made ourselves): become `uid`/`gid`, for good. Skipped (and
    said so) when that uid could not read `needs`, the paths Python runs from (e.g. under /root, without the
    minimal root that re-exposes them)."""
    if os.geteuid() != 0 or "userns" in layers.applied:
        layers.lack("uid_drop", "not running as root" if os.geteuid() != 0 else
                    "inside a user namespace only our own uid is mapped")
        return
    unreadable = [p for p in needs if not world_readable(p)]
    if unreadable:
        layers.lack("uid_drop", f"uid {uid} could not read {unreadable[0]} (no minimal root to re-expose it)")
        return
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    layers.add("uid_drop")


# ---------------------------------------------------------------------------------------------- Landlock
LL_EXECUTE, LL_WRITE_FILE, LL_READ_FILE, LL_READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
LL_REMOVE_FILE, LL_MAKE_REG, LL_TRUNCATE = 1 << 5, 1 << 8, 1 << 14
_LL_FS_BITS = {1: 13, 2: 14, 3: 15, 4: 15, 5: 16}  # handled filesystem rights by ABI version (bits 0..n-1)
_LL_FILE_RIGHTS = LL_EXECUTE | LL_WRITE_FILE | LL_READ_FILE | LL_TRUNCATE | (1 << 15)
LANDLOCK_RULE_PATH_BENEATH = 1
LANDLOCK_CREATE_RULESET_VERSION = 1


def landlock_abi() -> int:
    if "landlock_create_ruleset" not in SYSCALLS:
        return 0
    abi = _libc.syscall(SYSCALLS["landlock_create_ruleset"], None, ctypes.c_size_t(0),
                        ctypes.c_uint32(LANDLOCK_CREATE_RULESET_VERSION))
    return max(0, abi)


def landlock(read: list[str], write: list[str], layers: Layers) -> bool:
    """Restrict this process (and its future children) to reading beneath `read` and writing beneath `write`.

    Directories under `write` allow creating, writing and removing regular files but not listing them, so a name
    must be known to be opened. With ABI 4+, TCP bind/connect is denied; with ABI 6+, signals and abstract UNIX
    sockets cannot cross the sandbox boundary. Missing paths are skipped. Needs no_new_privs (or CAP_SYS_ADMIN).
    """
    abi = landlock_abi()
    if abi < 1:
        layers.lack("landlock", "the kernel has no Landlock (or a seccomp profile above us blocks it)")
        return False
    fs_rights = (1 << _LL_FS_BITS.get(abi, 16)) - 1
    net = 0b11 if abi >= 4 else 0
    scoped = 0b11 if abi >= 6 else 0
    attr = struct.pack("=QQQ", fs_rights, net, scoped)[: 8 if abi < 4 else 16 if abi < 6 else 24]
    buf = ctypes.create_string_buffer(attr, len(attr))
    ruleset = _syscall("landlock_create_ruleset", buf, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    try:
        read_rights = (LL_EXECUTE | LL_READ_FILE | LL_READ_DIR) & fs_rights
        write_rights = (LL_READ_FILE | LL_WRITE_FILE | LL_MAKE_REG | LL_REMOVE_FILE | LL_TRUNCATE) & fs_rights
        for paths, rights in ((read, read_rights), (write, write_rights)):
            for path in paths:
                try:
                    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
                except OSError:
                    continue
                try:
                    allowed = rights if os.path.isdir(path) else rights & _LL_FILE_RIGHTS
                    rule = ctypes.create_string_buffer(struct.pack("=Qi", allowed, fd), 12)
                    _syscall("landlock_add_rule", ruleset, LANDLOCK_RULE_PATH_BENEATH, rule, ctypes.c_uint32(0))
                finally:
                    os.close(fd)
        prctl(PR_SET_NO_NEW_PRIVS, 1)
        _syscall("landlock_restrict_self", ruleset, ctypes.c_uint32(0))
    finally:
        os.close(ruleset)
    layers.add("landlock")
    if abi < 4:
        layers.lack("landlock_net", f"Landlock ABI {abi} has no network rules (seccomp still denies sockets)")
    if abi < 6:
        layers.lack("landlock_scope", f"Landlock ABI {abi} cannot scope signals (seccomp still restricts them)")
    return True


# ----------------------------------------------------------------------------------------------- seccomp
_BPF_LD_W_ABS, _BPF_JEQ, _BPF_JGE, _BPF_JSET, _BPF_RET = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_ALLOW, _RET_KILL_PROCESS = 0x7FFF0000, 0x80000000
_SECCOMP_SET_MODE_FILTER, _SECCOMP_FILTER_FLAG_TSYNC = 1, 1
_X32_SYSCALL_BIT = 0x40000000
_OPEN_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

# Denied to all sandboxed code: running programs, new sockets, other processes' memory, the kernel's global state.
_ALWAYS_DENIED = (
    "execve", "execveat", "fork", "vfork", "socket", "connect", "bind", "listen", "accept", "accept4", "ptrace",
    "process_vm_readv", "process_vm_writev", "process_madvise", "kcmp", "pidfd_getfd", "mount", "umount2",
    "pivot_root", "chroot", "unshare", "setns", "open_tree", "move_mount", "fsopen", "fsconfig", "fsmount", "fspick",
    "mount_setattr", "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "keyctl", "add_key", "request_key", "init_module", "finit_module", "delete_module",
    "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff", "acct", "sethostname", "setdomainname", "iopl",
    "ioperm", "quotactl", "open_by_handle_at", "name_to_handle_at", "personality", "syslog", "vhangup", "uselib",
    "modify_ldt", "lookup_dcookie", "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setfsuid",
    "setfsgid", "setgroups",
)
# With `read_only`: nothing may be created, changed or removed.
_WRITE_CALLS = (
    "creat", "rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir", "unlink", "unlinkat", "link", "linkat",
    "symlink", "symlinkat", "mknod", "mknodat", "truncate", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown",
    "fchown", "lchown", "fchownat", "utime", "utimes", "utimensat", "futimesat", "setxattr", "lsetxattr",
    "fsetxattr", "removexattr", "lremovexattr", "fremovexattr",
)
_SIGNAL_CALLS = ("kill", "tkill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo", "pidfd_send_signal")


@dataclass(frozen=True)
class SeccompPolicy:
    """What one stage adds on top of the filters it inherited (filters stack; the strictest answer wins)."""

    base: bool = True  # _ALWAYS_DENIED, clone with namespace flags, clone3 (ENOSYS so glibc falls back to clone)
    no_processes: bool = False  # clone without CLONE_THREAD: threads only
    no_signals: bool = False  # no signal sent to any process (envd signals the sandbox from outside)
    read_only: bool = False  # no file opened for writing, nothing created, changed or removed


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def _errno(value: int) -> int:
    return 0x00050000 | (value & 0xFFFF)


def build_filter(policy: SeccompPolicy) -> bytes:
    """The BPF program for `policy` on this architecture."""
    table, audit_arch = _TABLES[MACHINE]
    nr = {**table, **_COMMON}
    eperm = _errno(errno.EPERM)
    arg_lo = lambda i: 16 + 8 * i  # noqa: E731  (struct seccomp_data: nr, arch, ip, args[6]; little-endian)
    prog = [_insn(_BPF_LD_W_ABS, 4), _insn(_BPF_JEQ, audit_arch, 1, 0), _insn(_BPF_RET, _RET_KILL_PROCESS),
            _insn(_BPF_LD_W_ABS, 0)]
    if MACHINE == "x86_64":  # x32 system calls: another table, denied wholesale
        prog += [_insn(_BPF_JGE, _X32_SYSCALL_BIT, 0, 1), _insn(_BPF_RET, eperm)]

    def deny(name: str, value: int = eperm) -> None:
        if name in nr:
            prog.extend([_insn(_BPF_JEQ, nr[name], 0, 1), _insn(_BPF_RET, value)])

    def when(name: str, block: list[bytes]) -> None:
        """Run `block` (which reloads the syscall number at its end) only for syscall `name`."""
        if name in nr:
            prog.append(_insn(_BPF_JEQ, nr[name], 0, len(block)))
            prog.extend(block)

    if policy.base:
        for name in _ALWAYS_DENIED:
            deny(name)
        deny("clone3", _errno(errno.ENOSYS))
        deny("openat2", _errno(errno.ENOSYS))  # its flags sit behind a pointer seccomp cannot read
        when("clone", [_insn(_BPF_LD_W_ABS, arg_lo(0)), _insn(_BPF_JSET, NAMESPACE_FLAGS, 0, 1),
                       _insn(_BPF_RET, eperm), _insn(_BPF_LD_W_ABS, 0)])
    if policy.no_processes:
        when("clone", [_insn(_BPF_LD_W_ABS, arg_lo(0)), _insn(_BPF_JSET, CLONE_THREAD, 1, 0),
                       _insn(_BPF_RET, eperm), _insn(_BPF_LD_W_ABS, 0)])
        deny("clone3", _errno(errno.ENOSYS))
        deny("pidfd_open")
    if policy.no_signals:
        for name in _SIGNAL_CALLS:
            deny(name)
    if policy.read_only:
        for name in _WRITE_CALLS:
            deny(name)
        for name, flags_arg in (("open", 1), ("openat", 2)):
            when(name, [_insn(_BPF_LD_W_ABS, arg_lo(flags_arg)), _insn(_BPF_JSET, _OPEN_WRITE_FLAGS, 0, 1),
                        _insn(_BPF_RET, eperm), _insn(_BPF_LD_W_ABS, 0)])
    prog.append(_insn(_BPF_RET, _RET_ALLOW))
    return b"".join(prog)


def install_seccomp(policy: SeccompPolicy, layers: Layers, name: str = "seccomp") -> bool:
    """Install `policy` for every thread of this process, for good (needs no_new_privs)."""
    if MACHINE not in _TABLES:
        layers.lack(name, f"no syscall table for {MACHINE}")
        return False
    program = build_filter(policy)
    count = len(program) // 8
    filters = ctypes.create_string_buffer(program, len(program))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = SockFprog(count, ctypes.cast(filters, ctypes.c_void_p))
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    try:
        _check(_libc.syscall(317 if MACHINE == "x86_64" else 277, _SECCOMP_SET_MODE_FILTER,
                             _SECCOMP_FILTER_FLAG_TSYNC, ctypes.byref(fprog)), "seccomp")
    except OSError as exc:
        layers.lack(name, str(exc))
        return False
    layers.add(name)
    return True


# ------------------------------------------------------------------------------------------------ rlimits
def set_rlimits(*, address_space: int | None = None, file_size: int | None = None, open_files: int | None = None,
                cpu_seconds: int | None = None, layers: Layers | None = None) -> None:
    """Hard and soft limits alike (so the code cannot raise them again); None leaves a limit as it is."""
    def setl(res: int, value: int | None) -> None:
        if value is None:
            return
        soft, hard = resource.getrlimit(res)
        value = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(res, (value, value))

    if cpu_seconds is not None:
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))  # SIGXCPU, then SIGKILL
    setl(resource.RLIMIT_AS, address_space)
    setl(resource.RLIMIT_FSIZE, file_size)
    setl(resource.RLIMIT_NOFILE, open_files)
    setl(resource.RLIMIT_CORE, 0)
    if layers is not None:
        layers.add("rlimits")
