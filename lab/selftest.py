"""selftest - upstream's livepatch selftest shell functions
(tools/testing/selftests/livepatch/functions.sh), played on a lab kernel.

Each function does what its shell namesake does, through the kernel: the
"% modprobe ..." lines go to /dev/kmsg, modules are loaded with insmod,
patches disabled by writing their `enabled` file, and waiting is polling
the sysfs files.  result() filters the console the way check_result does
(lines with 'livepatch:' or 'test_klp', no taint lines), so a test can
compare it with the script's expected text word for word.

    with Selftest() as st:
        st.load_lp("test_klp_livepatch")
        st.disable_lp("test_klp_livepatch")
        st.unload_lp("test_klp_livepatch")
        assert st.result() == EXPECTED
"""
from __future__ import annotations

import pathlib

from .errors import LabError
from .livepatch import LivepatchError
from .system import boot

PATCHES = pathlib.Path(__file__).resolve().parent.parent / "patches" / "test_modules"
MAX_RETRIES = 600              # functions.sh: 600 tries ...
RETRY_INTERVAL = 100_000       # ... with this many instructions between them (its 0.1 s)
KLP_SYSFS_DIR = "/sys/kernel/livepatch"
HZ = 100                       # the kernel's ticks a second (firmware kernel.h)
TRACING = "/sys/kernel/tracing"


class SelftestError(LabError):
    """A step of a selftest did not do what the script expects (its die())."""


class Selftest:
    """A booted kernel and the selftests' shell functions over it.  The
    defaults give the conditions the scripts assume: a quiet machine
    running upstream's consistency model (the kernel's own transition
    work switches sleeping tasks after a stack check)."""

    def __init__(self, *, workload="quiet", model="upstream", patches_dir=PATCHES, style="modprobe",
                 **boot_args):
        # style: how the script's shell loads modules and words it, "% modprobe
        # NAME" (the older functions.sh) or "% insmod test_modules/NAME.ko"
        self.style = style
        self.system = boot(workload=workload, model=model, **boot_args)
        self.dir = pathlib.Path(patches_dir)
        self._mark = len(self.system.console)

    def close(self):
        self.system.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # ---- plumbing ----
    def log(self, msg):
        """echo MSG > /dev/kmsg"""
        ret = self.system.write_file("/dev/kmsg", msg)
        if ret < 0:
            raise SelftestError(f"cannot write to /dev/kmsg: {ret}")

    def die(self, msg):
        self.log(f"ERROR: {msg}")
        raise SelftestError(msg)

    def exists(self, path):
        try:
            self.system.read_file(path)
            return True
        except LivepatchError:
            return False

    def cat(self, path):
        return self.system.read_file(path).rstrip("\n")

    def loop_until(self, cond):
        for _ in range(MAX_RETRIES):
            if cond():
                return True
            self.system.run(RETRY_INTERVAL)
        return cond()

    def _path(self, mod):
        return self.dir / f"{mod}.o"

    def _modprobe_line(self, mod, params):
        what = f"insmod test_modules/{mod}.ko" if self.style == "insmod" else f"modprobe {mod}"
        msg = f"% {what} " + " ".join(f"{k}={v}" for k, v in params.items())
        return msg.rstrip()

    def _load_error(self, mod, exc):
        """What modprobe or insmod prints when the load fails."""
        why = str(exc).rsplit(": ", 1)[-1]
        if self.style == "insmod":
            return f"insmod: ERROR: could not insert module test_modules/{mod}.ko: {why}"
        return f"modprobe: ERROR: could not insert '{mod}': {why}"

    # ---- the functions ----
    def start_test(self, name=None):
        """Results from here on (dmesg -C; start_test)."""
        self._mark = len(self.system.console)

    def __load_mod(self, mod, params):
        self.log(self._modprobe_line(mod, params))
        try:
            self.system.insmod(self._path(mod), params)
        except LivepatchError as e:
            self.die(str(e))

    def load_mod(self, mod, **params):
        if self._is_livepatch(mod):
            self.die(f"use load_lp() to load the livepatch module {mod}")
        self.__load_mod(mod, params)

    def load_lp_nowait(self, mod, **params):
        if not self._is_livepatch(mod):
            self.die(f"module {mod} is not a livepatch")
        self.__load_mod(mod, params)
        if not self.loop_until(lambda: self.exists(f"{KLP_SYSFS_DIR}/{mod}/enabled")):
            self.die(f"failed to load module {mod} (sysfs)")

    def load_lp(self, mod, **params):
        self.load_lp_nowait(mod, **params)
        if not self.loop_until(lambda: self.cat(f"{KLP_SYSFS_DIR}/{mod}/transition") == "0"):
            self.die("failed to complete transition")

    def load_failing_mod(self, mod, **params):
        self.log(self._modprobe_line(mod, params))
        try:
            self.system.insmod(self._path(mod), params)
        except LivepatchError as e:
            self.log(self._load_error(mod, e))
            return str(e)
        self.die(f"{mod} unexpectedly loaded")

    def unload_mod(self, mod):
        if not self.loop_until(lambda: self._refcnt(mod) == 0):
            self.die(f"failed to unload module {mod} (refcnt)")
        self.log(f"% rmmod {mod}")
        try:
            self.system.rmmod(mod)
        except LivepatchError as e:
            self.die(str(e))

    unload_lp = unload_mod

    def disable_lp(self, mod):
        self.log(f"% echo 0 > {KLP_SYSFS_DIR}/{mod}/enabled")
        self.system.write_file(f"{KLP_SYSFS_DIR}/{mod}/enabled", "0")
        if not self.loop_until(lambda: not self.exists(f"{KLP_SYSFS_DIR}/{mod}/enabled")):
            self.die(f"failed to disable livepatch {mod}")

    def spawn(self, program):
        """./PROGRAM &: its pid."""
        try:
            return self.system.spawn(program)
        except LivepatchError as e:
            self.die(str(e))

    def kill(self, pid):
        """kill PID (SIGTERM), and wait until it has gone."""
        self.system.send_signal(pid, 15)
        self.loop_until(lambda: self.system.task(pid).state.value in ("dead", "unused"))

    def set_pre_patch_ret(self, mod, ret):
        path = f"/sys/module/{mod}/parameters/pre_patch_ret"
        self.log(f"% echo {ret} > {path}")
        self.system.write_file(path, str(ret))
        if not self.loop_until(lambda: self.cat(path) == str(ret)):
            self.die(f"failed to set pre_patch_ret parameter for {mod} module")

    def sleep(self, seconds):
        """sleep N: N seconds of the kernel's time (HZ ticks a second, a tick a quantum)."""
        self.system.run(int(seconds * HZ * self.system.kernel.quantum))

    def check_sysfs_rights(self, mod, rel_path, expected):
        path = f"{KLP_SYSFS_DIR}/{mod}/{rel_path}".rstrip("/")
        rights = mode_string(self.system.stat(path))
        if rights != expected:
            self.die(f"Unexpected access rights of {path}: {expected} vs. {rights}")

    def check_sysfs_value(self, mod, rel_path, expected):
        path = f"{KLP_SYSFS_DIR}/{mod}/{rel_path}"
        value = self.cat(path)
        if value != expected:
            self.die(f"Unexpected value in {path}: {expected} vs. {value}")

    def set_ftrace_enabled(self, value, can_fail=False):
        """sysctl kernel.ftrace_enabled=VALUE, and its log line."""
        from .livepatch.klp import STRERROR
        ret = self.system.write_file("/proc/sys/kernel/ftrace_enabled", str(value))
        result = self.cat("/proc/sys/kernel/ftrace_enabled")
        if result != str(value):
            if can_fail:
                self.log(f'livepatch: sysctl: setting key "kernel.ftrace_enabled": {STRERROR.get(-ret, ret)}')
                return
            self.die(f"failed to set kernel.ftrace_enabled = {value}")
        self.log(f"livepatch: kernel.ftrace_enabled = {result}")

    def trace_function(self, funcname):
        """The function tracer on one function (tracefs)."""
        self.system.write_file(f"{TRACING}/set_ftrace_filter", funcname)
        if self.system.write_file(f"{TRACING}/current_tracer", "function") < 0:
            self.die(f"cannot trace {funcname}")

    def check_traced_functions(self, *funcnames):
        trace = self.system.read_file(f"{TRACING}/trace")
        for funcname in funcnames:
            if funcname not in trace:
                self.die(f"Function ({funcname}) not found in the trace buffer")
        self.cleanup_tracing()

    def cleanup_tracing(self):
        self.system.write_file(f"{TRACING}/current_tracer", "nop")
        self.system.write_file(f"{TRACING}/set_ftrace_filter", "")

    def grep_live_patched(self, path):
        """grep 'live patched' PATH > /dev/kmsg"""
        for line in self.system.read_file(path).splitlines():
            if "live patched" in line:
                self.log(line)

    def _is_livepatch(self, mod):
        try:
            info = _modinfo(self._path(mod))
        except OSError:
            self.die(f"unable to load module {mod}: no {self._path(mod)}")
        return info.get("livepatch") == "Y"

    def _refcnt(self, mod):
        for p in self.system.livepatch.loaded_modules():
            if p.module.name == mod:
                return self.system.modules.refcnt(p.module)
        return 0

    def result(self):
        """The console since start_test(), as check_result() filters it."""
        lines = self.system.console[self._mark:]
        return "\n".join(line for line in lines
                         if ("livepatch:" in line or "test_klp" in line)
                         and "tainting kernel" not in line and "taints kernel" not in line)


def mode_string(mode):
    """st_mode as `stat --format %A` prints it (drwxr-xr-x)."""
    kind = "d" if mode & 0o040000 else "-"
    bits = "".join(ch if mode & (1 << (8 - i)) else "-" for i, ch in enumerate("rwxrwxrwx"))
    return kind + bits


def _modinfo(path):
    """modinfo: the tag=value strings of an object's .modinfo section."""
    from .modules import check_object
    data = pathlib.Path(path).read_bytes()
    obj = check_object(data, pathlib.Path(path).name)
    out = {}
    for sec in obj.sections:
        if sec.name == ".modinfo":
            for raw in obj.content(sec).split(b"\0"):
                tag, eq, value = raw.decode("ascii", "replace").partition("=")
                if eq:
                    out.setdefault(tag, value)
    return out
