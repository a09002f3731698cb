# Probes, run inside a guest on a Debian root image, for what a real userland needs of the guest
# kernel (images/kernel/agentvm.config). Each line: "<feature> ok" or "<feature> FAIL <why>".
# Behaviour is probed (a syscall, a mount, a namespace), not the config text.
import ctypes
import errno
import os
import subprocess

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def syscall(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return r, ctypes.get_errno()


def report(name, ok, why=""):
    print(f"{name} {'ok' if ok else 'FAIL ' + why}")


def run(*argv):
    p = subprocess.run(argv, capture_output=True, text=True)
    return p.returncode == 0, (p.stderr or p.stdout).strip()[:200]


# Namespaces as bubblewrap uses them (Claude Code's and Codex's own sandboxes).
for flag, name in (("-U", "user"), ("-Ur", "user-root"), ("-Urp --fork", "pid"),
                   ("-Urn", "net"), ("-Uri", "ipc"), ("-Uru", "uts"), ("-Urm", "mount")):
    report(f"ns-{name}", *run("unshare", *flag.split(), "true"))
ok, why = run("unshare", "-Urpf", "--mount-proc", "sh", "-c", "test $$ = 1")
report("ns-pid-is-1", ok, why)

status = open("/proc/self/status").read()
report("seccomp", "Seccomp:" in status, "no Seccomp: line in /proc/self/status")
# prctl(PR_GET_SECCOMP) works only with CONFIG_SECCOMP; a filter needs SECCOMP_FILTER:
# seccomp(SECCOMP_GET_ACTION_AVAIL, 0, &SECCOMP_RET_KILL_PROCESS)
action = ctypes.c_uint32(0x80000000)
r, e = libc.syscall(317, 2, 0, ctypes.byref(action)), ctypes.get_errno()
report("seccomp-filter", r == 0, os.strerror(e))

ok, why = run("ipcmk", "-M", "4096")
report("sysv-ipc", ok, why)
for p in ("/proc/sys/fs/mqueue/msg_max",):
    report("posix-mqueue", os.path.exists(p), f"{p} missing")

params = (ctypes.c_uint8 * 120)()
r, e = syscall(425, 4, ctypes.addressof(params))  # io_uring_setup(4, &params)
report("io_uring", r >= 0, os.strerror(e))
if r >= 0:
    os.close(r)
handle = (ctypes.c_uint8 * 136)()
ctypes.cast(handle, ctypes.POINTER(ctypes.c_uint32))[0] = 128
mount_id = ctypes.c_int(0)
r, e = libc.syscall(303, -100, b"/", ctypes.byref(handle), ctypes.byref(mount_id), 0), ctypes.get_errno()
report("fhandle", r == 0, os.strerror(e))  # name_to_handle_at
r, e = syscall(324, 0, 0)  # membarrier(MEMBARRIER_CMD_QUERY)
report("membarrier", r >= 0, os.strerror(e))
r, e = syscall(334, 0, 0, 0, 0)  # rseq with bad args: EINVAL when built in, ENOSYS if not
report("rseq", e != errno.ENOSYS, "ENOSYS")
r, e = syscall(323, 0)  # userfaultfd is not needed: informational only
os.makedirs("/tmp/bm", exist_ok=True)
report("binfmt_misc", *run("mount", "-t", "binfmt_misc", "none", "/tmp/bm"))
run("umount", "/tmp/bm")
report("fuse", os.path.exists("/dev/fuse"), "/dev/fuse missing")
report("loop", *run("losetup", "-f"))
fss = open("/proc/filesystems").read()
for fs in ("erofs", "squashfs", "overlay", "ext4", "9p", "binfmt_misc", "cgroup2"):
    report(f"fs-{fs}", fs in fss, "not in /proc/filesystems")
open("/tmp/x", "w").close()
try:
    os.setxattr("/tmp/x", "trusted.agentvm", b"1")
    report("tmpfs-xattr", True)
except OSError as ex:
    report("tmpfs-xattr", False, str(ex))
open("/root/acl", "w").close()
try:
    # An ACL entry on ext4 (EXT4_FS_POSIX_ACL): the minimal ACL, written as the xattr.
    acl = bytes([2, 0, 0, 0, 1, 0, 6, 0, 255, 255, 255, 255, 4, 0, 4, 0, 255, 255, 255, 255,
                 32, 0, 4, 0, 255, 255, 255, 255])
    os.setxattr("/root/acl", "system.posix_acl_access", acl)
    report("ext4-acl", True)
except OSError as ex:
    report("ext4-acl", False, str(ex))
try:
    os.setxattr("/root/acl", "security.agentvm", b"1")
    report("ext4-security-xattr", True)
except OSError as ex:
    report("ext4-security-xattr", False, str(ex))
os.makedirs("/tmp/cg", exist_ok=True)
ok, why = run("mount", "-t", "cgroup2", "none", "/tmp/cg")
ctrls = open("/tmp/cg/cgroup.controllers").read().split() if ok else []
for c in ("cpu", "cpuset", "io", "memory", "pids"):
    report(f"cgroup-{c}", c in ctrls, why or f"controllers: {' '.join(ctrls)}")
run("umount", "/tmp/cg")
s = __import__("socket")
try:
    t = s.socket(s.AF_INET6, s.SOCK_STREAM)
    t.bind(("::1", 0))
    t.close()
    report("ipv6-loopback", True)
except OSError as ex:
    report("ipv6-loopback", False, str(ex))
report("config-gz", os.path.exists("/proc/config.gz"), "/proc/config.gz missing")
