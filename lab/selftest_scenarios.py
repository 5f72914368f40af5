"""selftest_scenarios - every scenario of upstream's livepatch selftests
(tools/testing/selftests/livepatch/: test-livepatch.sh, test-callbacks.sh,
test-shadow-vars.sh, test-state.sh, test-sysfs.sh, test-ftrace.sh), played
on the lab's kernel through lab.selftest.  Each scenario does the script's
steps and returns the kernel log the script expects, word for word (the
modprobe-era wording of functions.sh: "% modprobe NAME").  `lab selftest`
runs them; tests/test_selftests.py checks every one.
"""
from __future__ import annotations

from .selftest import SelftestError

SCENARIOS = []      # (script, title, function), in the scripts' order
STYLES = {}         # script -> how its functions.sh words a load, when not "modprobe"


def scenario(script, title, style="modprobe"):
    def register(fn):
        SCENARIOS.append((script, title, fn))
        if style != "modprobe":
            STYLES[script] = style
        return fn
    return register


def expect(ok, what):
    """The script's own checks ("FAIL" and die)."""
    if not ok:
        raise SelftestError(f"livepatch kselftest(s) failed: {what}")


LP = "test_klp_livepatch"
REPLACE = "test_klp_atomic_replace"
SHADOW = "test_klp_shadow_vars"
STATE, STATE2, STATE3 = "test_klp_state", "test_klp_state2", "test_klp_state3"


def lines(text, **names):
    """The expected text with $NAME replaced, as the scripts expand it."""
    for key, value in names.items():
        text = text.replace(f"${key}", value)
    return text.strip("\n")


def enable(mod):
    return f"""livepatch: enabling patch '{mod}'
livepatch: '{mod}': initializing patching transition
livepatch: '{mod}': starting patching transition
livepatch: '{mod}': completing patching transition
livepatch: '{mod}': patching complete"""


def disable(mod):
    return f"""% echo 0 > /sys/kernel/livepatch/{mod}/enabled
livepatch: '{mod}': initializing unpatching transition
livepatch: '{mod}': starting unpatching transition
livepatch: '{mod}': completing unpatching transition
livepatch: '{mod}': unpatching complete"""


# ---- test-livepatch.sh ----

@scenario("test-livepatch.sh", "basic function patching")
def livepatch_basic_function_patching(st):
    st.load_lp(LP)
    expect(st.cat("/proc/cmdline") == f"{LP}: this has been live patched", "/proc/cmdline is not patched")
    st.disable_lp(LP)
    st.unload_lp(LP)
    expect(st.cat("/proc/cmdline") != f"{LP}: this has been live patched", "/proc/cmdline is still patched")
    return f"% modprobe {LP}\n{enable(LP)}\n{disable(LP)}\n% rmmod {LP}"


@scenario("test-livepatch.sh", "multiple livepatches")
def livepatch_multiple_livepatches(st):

    def grep():
        st.grep_live_patched("/proc/cmdline")
        st.grep_live_patched("/proc/meminfo")
    st.load_lp(LP)
    grep()
    st.load_lp(REPLACE, replace=0)
    grep()
    st.disable_lp(REPLACE)
    st.unload_lp(REPLACE)
    grep()
    st.disable_lp(LP)
    st.unload_lp(LP)
    grep()
    return "\n".join([
        f"% modprobe {LP}", enable(LP), f"{LP}: this has been live patched",
        f"% modprobe {REPLACE} replace=0", enable(REPLACE),
        f"{LP}: this has been live patched", f"{REPLACE}: this has been live patched",
        disable(REPLACE), f"% rmmod {REPLACE}", f"{LP}: this has been live patched",
        disable(LP), f"% rmmod {LP}"])


@scenario("test-livepatch.sh", "atomic replace livepatch")
def livepatch_atomic_replace(st):

    def grep():
        st.grep_live_patched("/proc/cmdline")
        st.grep_live_patched("/proc/meminfo")
    st.load_lp(LP)
    grep()
    st.load_lp(REPLACE, replace=1)
    grep()
    st.unload_lp(LP)            # replaced: removable without disabling it
    grep()
    st.disable_lp(REPLACE)
    st.unload_lp(REPLACE)
    grep()
    return "\n".join([
        f"% modprobe {LP}", enable(LP), f"{LP}: this has been live patched",
        f"% modprobe {REPLACE} replace=1", enable(REPLACE), f"{REPLACE}: this has been live patched",
        f"% rmmod {LP}", f"{REPLACE}: this has been live patched",
        disable(REPLACE), f"% rmmod {REPLACE}"])


# ---- test-shadow-vars.sh ----

SHADOW_EXPECTED = """% modprobe $MOD_TEST
$MOD_TEST: klp_shadow_get(obj=PTR1, id=0x1234) = PTR0
$MOD_TEST:   got expected NULL result
$MOD_TEST: shadow_ctor: PTR3 -> PTR2
$MOD_TEST: klp_shadow_get_or_alloc(obj=PTR1, id=0x1234, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR2 = PTR3
$MOD_TEST: shadow_ctor: PTR6 -> PTR5
$MOD_TEST: klp_shadow_alloc(obj=PTR1, id=0x1235, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR5 = PTR6
$MOD_TEST: shadow_ctor: PTR8 -> PTR7
$MOD_TEST: klp_shadow_alloc(obj=PTR9, id=0x1234, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR7 = PTR8
$MOD_TEST: shadow_ctor: PTR11 -> PTR10
$MOD_TEST: klp_shadow_alloc(obj=PTR9, id=0x1235, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR10 = PTR11
$MOD_TEST: shadow_ctor: PTR13 -> PTR12
$MOD_TEST: klp_shadow_get_or_alloc(obj=PTR14, id=0x1234, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR12 = PTR13
$MOD_TEST: shadow_ctor: PTR16 -> PTR15
$MOD_TEST: klp_shadow_alloc(obj=PTR14, id=0x1235, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR15 = PTR16
$MOD_TEST: klp_shadow_get(obj=PTR1, id=0x1234) = PTR3
$MOD_TEST:   got expected PTR3 -> PTR2 result
$MOD_TEST: klp_shadow_get(obj=PTR1, id=0x1235) = PTR6
$MOD_TEST:   got expected PTR6 -> PTR5 result
$MOD_TEST: klp_shadow_get(obj=PTR9, id=0x1234) = PTR8
$MOD_TEST:   got expected PTR8 -> PTR7 result
$MOD_TEST: klp_shadow_get(obj=PTR9, id=0x1235) = PTR11
$MOD_TEST:   got expected PTR11 -> PTR10 result
$MOD_TEST: klp_shadow_get(obj=PTR14, id=0x1234) = PTR13
$MOD_TEST:   got expected PTR13 -> PTR12 result
$MOD_TEST: klp_shadow_get(obj=PTR14, id=0x1235) = PTR16
$MOD_TEST:   got expected PTR16 -> PTR15 result
$MOD_TEST: klp_shadow_get_or_alloc(obj=PTR1, id=0x1234, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR2 = PTR3
$MOD_TEST:   got expected PTR3 -> PTR2 result
$MOD_TEST: klp_shadow_get_or_alloc(obj=PTR9, id=0x1234, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR7 = PTR8
$MOD_TEST:   got expected PTR8 -> PTR7 result
$MOD_TEST: klp_shadow_get_or_alloc(obj=PTR14, id=0x1234, size=8, gfp_flags=GFP_KERNEL), ctor=PTR4, ctor_data=PTR12 = PTR13
$MOD_TEST:   got expected PTR13 -> PTR12 result
$MOD_TEST: shadow_dtor(obj=PTR1, shadow_data=PTR3)
$MOD_TEST: klp_shadow_free(obj=PTR1, id=0x1234, dtor=PTR17)
$MOD_TEST: klp_shadow_get(obj=PTR1, id=0x1234) = PTR0
$MOD_TEST:   got expected NULL result
$MOD_TEST: shadow_dtor(obj=PTR9, shadow_data=PTR8)
$MOD_TEST: klp_shadow_free(obj=PTR9, id=0x1234, dtor=PTR17)
$MOD_TEST: klp_shadow_get(obj=PTR9, id=0x1234) = PTR0
$MOD_TEST:   got expected NULL result
$MOD_TEST: shadow_dtor(obj=PTR14, shadow_data=PTR13)
$MOD_TEST: klp_shadow_free(obj=PTR14, id=0x1234, dtor=PTR17)
$MOD_TEST: klp_shadow_get(obj=PTR14, id=0x1234) = PTR0
$MOD_TEST:   got expected NULL result
$MOD_TEST: klp_shadow_get(obj=PTR1, id=0x1235) = PTR6
$MOD_TEST:   got expected PTR6 -> PTR5 result
$MOD_TEST: klp_shadow_get(obj=PTR9, id=0x1235) = PTR11
$MOD_TEST:   got expected PTR11 -> PTR10 result
$MOD_TEST: klp_shadow_get(obj=PTR14, id=0x1235) = PTR16
$MOD_TEST:   got expected PTR16 -> PTR15 result
$MOD_TEST: klp_shadow_free_all(id=0x1235, dtor=PTR0)
$MOD_TEST: klp_shadow_get(obj=PTR1, id=0x1235) = PTR0
$MOD_TEST:   got expected NULL result
$MOD_TEST: klp_shadow_get(obj=PTR9, id=0x1235) = PTR0
$MOD_TEST:   got expected NULL result
$MOD_TEST: klp_shadow_get(obj=PTR14, id=0x1235) = PTR0
$MOD_TEST:   got expected NULL result
% rmmod $MOD_TEST"""


@scenario("test-shadow-vars.sh", "basic shadow variable API")
def shadow_vars_basic_api(st):
    st.load_mod(SHADOW)
    st.unload_mod(SHADOW)
    return lines(SHADOW_EXPECTED, MOD_TEST=SHADOW)


# ---- test-state.sh ----

def state_enable(mod, take_over=False):
    alloc = "space to store console_loglevel already allocated" if take_over \
        else "allocating space to store console_loglevel"
    fix = "taking over the console_loglevel change" if take_over else "fixing console_loglevel"
    return f"""% modprobe {mod}
livepatch: enabling patch '{mod}'
livepatch: '{mod}': initializing patching transition
{mod}: pre_patch_callback: vmlinux
{mod}: allocate_loglevel_state: {alloc}
livepatch: '{mod}': starting patching transition
livepatch: '{mod}': completing patching transition
{mod}: post_patch_callback: vmlinux
{mod}: fix_console_loglevel: {fix}
livepatch: '{mod}': patching complete"""


def state_disable(mod):
    return f"""% echo 0 > /sys/kernel/livepatch/{mod}/enabled
livepatch: '{mod}': initializing unpatching transition
{mod}: pre_unpatch_callback: vmlinux
{mod}: restore_console_loglevel: restoring console_loglevel
livepatch: '{mod}': starting unpatching transition
livepatch: '{mod}': completing unpatching transition
{mod}: post_unpatch_callback: vmlinux
{mod}: free_loglevel_state: freeing space for the stored console_loglevel
livepatch: '{mod}': unpatching complete"""


def console_loglevel(st):
    return st.system.machine.i32(st.system.image.address("console_loglevel"))


@scenario("test-state.sh", "system state modification")
def state_system_state_modification(st):
    before = console_loglevel(st)
    st.load_lp(STATE)
    expect(console_loglevel(st) == 15, "the post-patch callback did not raise console_loglevel")   # MOTORMOUTH
    st.disable_lp(STATE)
    expect(console_loglevel(st) == before, "the pre-unpatch callback did not restore console_loglevel")
    st.unload_lp(STATE)
    return "\n".join([state_enable(STATE), state_disable(STATE), f"% rmmod {STATE}"])


@scenario("test-state.sh", "taking over system state modification")
def state_taking_over_system_state_modification(st):
    st.load_lp(STATE)
    st.load_lp(STATE2)
    st.unload_lp(STATE)
    st.disable_lp(STATE2)
    st.unload_lp(STATE2)
    return "\n".join([state_enable(STATE), state_enable(STATE2, take_over=True),
                                     f"% rmmod {STATE}", state_disable(STATE2), f"% rmmod {STATE2}"])


@scenario("test-state.sh", "compatible cumulative livepatches")
def state_compatible_cumulative_livepatches(st):
    st.load_lp(STATE2)
    st.load_lp(STATE3)
    st.unload_lp(STATE2)
    st.load_lp(STATE2)
    st.disable_lp(STATE2)
    st.unload_lp(STATE2)
    st.unload_lp(STATE3)
    return "\n".join([
        state_enable(STATE2), state_enable(STATE3, take_over=True), f"% rmmod {STATE2}",
        state_enable(STATE2, take_over=True), state_disable(STATE2), f"% rmmod {STATE2}", f"% rmmod {STATE3}"])


@scenario("test-state.sh", "incompatible cumulative livepatches")
def state_incompatible_cumulative_livepatches(st):
    st.load_lp(STATE2)
    st.load_failing_mod(STATE)
    st.disable_lp(STATE2)
    st.unload_lp(STATE2)
    return "\n".join([
        state_enable(STATE2), f"% modprobe {STATE}",
        f"livepatch: Livepatch patch ({STATE}) is not compatible with the already installed livepatches.",
        f"modprobe: ERROR: could not insert '{STATE}': Invalid argument",
        state_disable(STATE2), f"% rmmod {STATE2}"])


# ---- test-callbacks.sh ----

DEMO, DEMO2 = "test_klp_callbacks_demo", "test_klp_callbacks_demo2"
TARGET, BUSY = "test_klp_callbacks_mod", "test_klp_callbacks_busy"
LIVE = "[MODULE_STATE_LIVE] Normal state"
COMING = "[MODULE_STATE_COMING] Full formed, running module_init"
GOING = "[MODULE_STATE_GOING] Going away"


def cb(mod, callback, obj="vmlinux", state=None):
    return f"{mod}: {callback}_callback: {obj}" + (f" -> {state}" if state else "")


def cb_enable(mod, *objs):
    """Enabling with pre/post-patch callbacks for vmlinux and objs ((name, state), ...)."""
    out = [f"livepatch: enabling patch '{mod}'", f"livepatch: '{mod}': initializing patching transition",
           cb(mod, "pre_patch")]
    out += [cb(mod, "pre_patch", o, s) for o, s in objs]
    out += [f"livepatch: '{mod}': starting patching transition",
            f"livepatch: '{mod}': completing patching transition", cb(mod, "post_patch")]
    out += [cb(mod, "post_patch", o, s) for o, s in objs]
    out += [f"livepatch: '{mod}': patching complete"]
    return "\n".join(out)


def cb_disable(mod, *objs):
    out = [f"% echo 0 > /sys/kernel/livepatch/{mod}/enabled",
           f"livepatch: '{mod}': initializing unpatching transition", cb(mod, "pre_unpatch")]
    out += [cb(mod, "pre_unpatch", o, s) for o, s in objs]
    out += [f"livepatch: '{mod}': starting unpatching transition",
            f"livepatch: '{mod}': completing unpatching transition", cb(mod, "post_unpatch")]
    out += [cb(mod, "post_unpatch", o, s) for o, s in objs]
    out += [f"livepatch: '{mod}': unpatching complete"]
    return "\n".join(out)


def coming(mod, target, post=True):
    out = [f"% modprobe {target}", f"livepatch: applying patch '{mod}' to loading module '{target}'",
           cb(mod, "pre_patch", target, COMING)]
    if post:
        out.append(cb(mod, "post_patch", target, COMING))
    out.append(f"{target}: {target}_init")
    return "\n".join(out)


def going(mod, target, pre=True):
    out = [f"% rmmod {target}", f"{target}: {target}_exit"]
    if pre:
        out.append(cb(mod, "pre_unpatch", target, GOING))
    out += [f"livepatch: reverting patch '{mod}' on unloading module '{target}'",
            cb(mod, "post_unpatch", target, GOING)]
    return "\n".join(out)


@scenario("test-callbacks.sh", "target module before livepatch")
def callbacks_target_module_before_livepatch(st):
    st.load_mod(TARGET)
    st.load_lp(DEMO)
    st.disable_lp(DEMO)
    st.unload_lp(DEMO)
    st.unload_mod(TARGET)
    return "\n".join([
        f"% modprobe {TARGET}", f"{TARGET}: {TARGET}_init", f"% modprobe {DEMO}",
        cb_enable(DEMO, (TARGET, LIVE)), cb_disable(DEMO, (TARGET, LIVE)),
        f"% rmmod {DEMO}", f"% rmmod {TARGET}", f"{TARGET}: {TARGET}_exit"])


@scenario("test-callbacks.sh", "module_coming notifier")
def callbacks_module_coming_notifier(st):
    st.load_lp(DEMO)
    st.load_mod(TARGET)
    st.disable_lp(DEMO)
    st.unload_lp(DEMO)
    st.unload_mod(TARGET)
    return "\n".join([
        f"% modprobe {DEMO}", cb_enable(DEMO), coming(DEMO, TARGET), cb_disable(DEMO, (TARGET, LIVE)),
        f"% rmmod {DEMO}", f"% rmmod {TARGET}", f"{TARGET}: {TARGET}_exit"])


@scenario("test-callbacks.sh", "module_going notifier")
def callbacks_module_going_notifier(st):
    st.load_mod(TARGET)
    st.load_lp(DEMO)
    st.unload_mod(TARGET)
    st.disable_lp(DEMO)
    st.unload_lp(DEMO)
    return "\n".join([
        f"% modprobe {TARGET}", f"{TARGET}: {TARGET}_init", f"% modprobe {DEMO}",
        cb_enable(DEMO, (TARGET, LIVE)), going(DEMO, TARGET), cb_disable(DEMO), f"% rmmod {DEMO}"])


@scenario("test-callbacks.sh", "module_coming and module_going notifiers")
def callbacks_module_coming_and_going_notifiers(st):
    st.load_lp(DEMO)
    st.load_mod(TARGET)
    st.unload_mod(TARGET)
    st.disable_lp(DEMO)
    st.unload_lp(DEMO)
    return "\n".join([
        f"% modprobe {DEMO}", cb_enable(DEMO), coming(DEMO, TARGET), going(DEMO, TARGET),
        cb_disable(DEMO), f"% rmmod {DEMO}"])


@scenario("test-callbacks.sh", "target module not present")
def callbacks_target_module_not_present(st):
    st.load_lp(DEMO)
    st.disable_lp(DEMO)
    st.unload_lp(DEMO)
    return "\n".join([f"% modprobe {DEMO}", cb_enable(DEMO), cb_disable(DEMO), f"% rmmod {DEMO}"])


@scenario("test-callbacks.sh", "pre-patch callback -ENODEV")
def callbacks_pre_patch_callback_enodev(st):
    st.load_mod(TARGET)
    st.load_failing_mod(DEMO, pre_patch_ret=-19)
    st.unload_mod(TARGET)
    return "\n".join([
        f"% modprobe {TARGET}", f"{TARGET}: {TARGET}_init", f"% modprobe {DEMO} pre_patch_ret=-19",
        f"livepatch: enabling patch '{DEMO}'", f"livepatch: '{DEMO}': initializing patching transition",
        cb(DEMO, "pre_patch"), "livepatch: pre-patch callback failed for object 'vmlinux'",
        f"livepatch: failed to enable patch '{DEMO}'",
        f"livepatch: '{DEMO}': canceling patching transition, going to unpatch",
        f"livepatch: '{DEMO}': completing unpatching transition", f"livepatch: '{DEMO}': unpatching complete",
        f"modprobe: ERROR: could not insert '{DEMO}': No such device",
        f"% rmmod {TARGET}", f"{TARGET}: {TARGET}_exit"])


@scenario("test-callbacks.sh", "module_coming + pre-patch callback -ENODEV")
def callbacks_module_coming_pre_patch_callback_enodev(st):
    st.load_lp(DEMO)
    st.set_pre_patch_ret(DEMO, -19)
    st.load_failing_mod(TARGET)
    st.disable_lp(DEMO)
    st.unload_lp(DEMO)
    return "\n".join([
        f"% modprobe {DEMO}", cb_enable(DEMO),
        f"% echo -19 > /sys/module/{DEMO}/parameters/pre_patch_ret",
        f"% modprobe {TARGET}", f"livepatch: applying patch '{DEMO}' to loading module '{TARGET}'",
        cb(DEMO, "pre_patch", TARGET, COMING), f"livepatch: pre-patch callback failed for object '{TARGET}'",
        f"livepatch: patch '{DEMO}' failed for module '{TARGET}', refusing to load module '{TARGET}'",
        f"modprobe: ERROR: could not insert '{TARGET}': No such device",
        cb_disable(DEMO), f"% rmmod {DEMO}"])


@scenario("test-callbacks.sh", "multiple target modules")
def callbacks_multiple_target_modules(st):
    st.load_mod(BUSY, sleep_secs=0)
    st.sleep(5)       # give busymod_work_func() a chance to run
    st.load_lp(DEMO)
    st.load_mod(TARGET)
    st.unload_mod(TARGET)
    st.disable_lp(DEMO)
    st.unload_lp(DEMO)
    st.unload_mod(BUSY)
    return "\n".join([
        f"% modprobe {BUSY} sleep_secs=0", f"{BUSY}: {BUSY}_init",
        f"{BUSY}: busymod_work_func, sleeping 0 seconds ...", f"{BUSY}: busymod_work_func exit",
        f"% modprobe {DEMO}", cb_enable(DEMO, (BUSY, LIVE)), coming(DEMO, TARGET), going(DEMO, TARGET),
        cb_disable(DEMO, (BUSY, LIVE)), f"% rmmod {DEMO}", f"% rmmod {BUSY}", f"{BUSY}: {BUSY}_exit"])


@scenario("test-callbacks.sh", "busy target module")
def callbacks_busy_target_module(st):
    st.load_mod(BUSY, sleep_secs=10)
    st.load_lp_nowait(DEMO)
    st.sleep(5)       # the transition stalls: busymod_work_func() is on the worker's stack
    expect(st.cat(f"/sys/kernel/livepatch/{DEMO}/transition") == "1", "the transition did not stall on the busy module")
    st.load_mod(TARGET)
    st.unload_mod(TARGET)
    st.disable_lp(DEMO)
    st.unload_lp(DEMO)
    st.unload_mod(BUSY)
    return "\n".join([
        f"% modprobe {BUSY} sleep_secs=10", f"{BUSY}: {BUSY}_init",
        f"{BUSY}: busymod_work_func, sleeping 10 seconds ...",
        f"% modprobe {DEMO}", f"livepatch: enabling patch '{DEMO}'",
        f"livepatch: '{DEMO}': initializing patching transition", cb(DEMO, "pre_patch"),
        cb(DEMO, "pre_patch", BUSY, LIVE), f"livepatch: '{DEMO}': starting patching transition",
        coming(DEMO, TARGET, post=False), going(DEMO, TARGET, pre=False),
        f"% echo 0 > /sys/kernel/livepatch/{DEMO}/enabled",
        f"livepatch: '{DEMO}': reversing transition from patching to unpatching",
        f"livepatch: '{DEMO}': starting unpatching transition",
        f"livepatch: '{DEMO}': completing unpatching transition", cb(DEMO, "post_unpatch"),
        cb(DEMO, "post_unpatch", BUSY, LIVE), f"livepatch: '{DEMO}': unpatching complete",
        f"% rmmod {DEMO}", f"% rmmod {BUSY}", f"{BUSY}: busymod_work_func exit", f"{BUSY}: {BUSY}_exit"])


@scenario("test-callbacks.sh", "multiple livepatches")
def callbacks_multiple_livepatches(st):
    st.load_lp(DEMO)
    st.load_lp(DEMO2)
    st.disable_lp(DEMO2)
    st.disable_lp(DEMO)
    st.unload_lp(DEMO2)
    st.unload_lp(DEMO)
    return "\n".join([
        f"% modprobe {DEMO}", cb_enable(DEMO), f"% modprobe {DEMO2}", cb_enable(DEMO2),
        cb_disable(DEMO2), cb_disable(DEMO), f"% rmmod {DEMO2}", f"% rmmod {DEMO}"])


@scenario("test-callbacks.sh", "atomic replace")
def callbacks_atomic_replace(st):
    st.load_lp(DEMO)
    st.load_lp(DEMO2, replace=1)
    st.disable_lp(DEMO2)
    st.unload_lp(DEMO2)
    st.unload_lp(DEMO)
    return "\n".join([
        f"% modprobe {DEMO}", cb_enable(DEMO), f"% modprobe {DEMO2} replace=1", cb_enable(DEMO2),
        cb_disable(DEMO2), f"% rmmod {DEMO2}", f"% rmmod {DEMO}"])


# ---- test-sysfs.sh ----

@scenario("test-sysfs.sh", "sysfs test")
def sysfs_test(st):
    st.load_lp(LP)
    st.check_sysfs_rights(LP, "", "drwxr-xr-x")
    st.check_sysfs_rights(LP, "enabled", "-rw-r--r--")
    st.check_sysfs_value(LP, "enabled", "1")
    st.check_sysfs_rights(LP, "force", "--w-------")
    st.check_sysfs_rights(LP, "transition", "-r--r--r--")
    st.check_sysfs_value(LP, "transition", "0")
    st.check_sysfs_rights(LP, "vmlinux/patched", "-r--r--r--")
    st.check_sysfs_value(LP, "vmlinux/patched", "1")
    st.disable_lp(LP)
    st.unload_lp(LP)
    return f"% modprobe {LP}\n{enable(LP)}\n{disable(LP)}\n% rmmod {LP}"


@scenario("test-sysfs.sh", "sysfs test object/patched")
def sysfs_test_object_patched(st):
    st.load_lp(DEMO)
    st.check_sysfs_value(DEMO, f"{TARGET}/patched", "0")
    st.load_mod(TARGET)
    st.check_sysfs_value(DEMO, f"{TARGET}/patched", "1")
    st.unload_mod(TARGET)
    st.check_sysfs_value(DEMO, f"{TARGET}/patched", "0")
    st.disable_lp(DEMO)
    st.unload_lp(DEMO)
    return "\n".join([
        f"% modprobe {DEMO}", cb_enable(DEMO), coming(DEMO, TARGET), going(DEMO, TARGET),
        cb_disable(DEMO), f"% rmmod {DEMO}"])


# ---- test-ftrace.sh (the insmod-era script: its functions.sh words a load "% insmod test_modules/NAME.ko") ----

def insmod(mod, params=""):
    return f"% insmod test_modules/{mod}.ko" + (f" {params}" if params else "")


def refused_by_ftrace(mod, func="cmdline_proc_show"):
    """A live patch whose ftrace handler cannot be registered (-EBUSY)."""
    return "\n".join([
        insmod(mod), f"livepatch: enabling patch '{mod}'", f"livepatch: '{mod}': initializing patching transition",
        f"livepatch: failed to register ftrace handler for function '{func}' (-16)",
        "livepatch: failed to patch object 'vmlinux'", f"livepatch: failed to enable patch '{mod}'",
        f"livepatch: '{mod}': canceling patching transition, going to unpatch",
        f"livepatch: '{mod}': completing unpatching transition", f"livepatch: '{mod}': unpatching complete",
        f"insmod: ERROR: could not insert module test_modules/{mod}.ko: Device or resource busy"])


@scenario("test-ftrace.sh", "livepatch interaction with ftrace_enabled sysctl", style="insmod")
def livepatch_interaction_with_ftrace_enabled_sysctl(st):
    st.set_ftrace_enabled(0)
    st.load_failing_mod(LP)
    st.set_ftrace_enabled(1)
    st.load_lp(LP)
    expect(st.cat("/proc/cmdline") == f"{LP}: this has been live patched", "/proc/cmdline is not patched")
    st.set_ftrace_enabled(0, can_fail=True)      # ftrace cannot be turned off under a live patch
    expect(st.cat("/proc/cmdline") == f"{LP}: this has been live patched", "/proc/cmdline is not patched")
    st.disable_lp(LP)
    st.unload_lp(LP)
    return "\n".join([
        "livepatch: kernel.ftrace_enabled = 0", refused_by_ftrace(LP),
        "livepatch: kernel.ftrace_enabled = 1", insmod(LP), enable(LP),
        'livepatch: sysctl: setting key "kernel.ftrace_enabled": Device or resource busy',
        disable(LP), f"% rmmod {LP}"])


@scenario("test-ftrace.sh", "trace livepatched function and check that the live patch remains in effect",
          style="insmod")
def trace_livepatched_function(st):
    st.load_lp(LP)
    st.trace_function("livepatch_cmdline_proc_show")
    if st.cat("/proc/cmdline") == f"{LP}: this has been live patched":
        st.log("livepatch: ok")
    st.check_traced_functions("livepatch_cmdline_proc_show")
    st.disable_lp(LP)
    st.unload_lp(LP)
    return "\n".join([insmod(LP), enable(LP), "livepatch: ok", disable(LP), f"% rmmod {LP}"])


@scenario("test-ftrace.sh", "livepatch a traced function and check that the live patch remains in effect",
          style="insmod")
def livepatch_a_traced_function(st):
    st.trace_function("cmdline_proc_show")
    st.load_lp(LP)
    if st.cat("/proc/cmdline") == f"{LP}: this has been live patched":
        st.log("livepatch: ok")
    st.check_traced_functions("cmdline_proc_show")
    st.disable_lp(LP)
    st.unload_lp(LP)
    return "\n".join([insmod(LP), enable(LP), "livepatch: ok", disable(LP), f"% rmmod {LP}"])


# ---- test-kprobe.sh ----

KPROBE = "test_klp_kprobe"


@scenario("test-kprobe.sh", "livepatch interaction with kprobed function with post_handler", style="insmod")
def kprobed_function_with_post_handler(st):
    st.load_mod(KPROBE, has_post_handler="true")
    st.load_failing_mod(LP)
    st.unload_mod(KPROBE)
    return "\n".join([insmod(KPROBE, "has_post_handler=true"), refused_by_ftrace(LP), f"% rmmod {KPROBE}"])


@scenario("test-kprobe.sh", "livepatch interaction with kprobed function without post_handler", style="insmod")
def kprobed_function_without_post_handler(st):
    st.load_mod(KPROBE, has_post_handler="false")
    st.load_lp(LP)
    expect(st.cat("/proc/cmdline") == f"{LP}: this has been live patched", "/proc/cmdline is not patched")
    hits = kprobe_hits(st)
    expect(hits > 0, "the kprobe did not fire on the live patched function")
    st.unload_mod(KPROBE)
    st.disable_lp(LP)
    st.unload_lp(LP)
    return "\n".join([insmod(KPROBE, "has_post_handler=false"), insmod(LP), enable(LP), f"% rmmod {KPROBE}",
                      disable(LP), f"% rmmod {LP}"])


def kprobe_hits(st):
    """How often the kprobe fired (its nhit, read from the module's memory)."""
    module = next(p.module for p in st.system.livepatch.loaded_modules() if p.module.name == KPROBE)
    return st.system.machine.u64(module.symbols["kp"].address + 4 * 8)


# ---- test-syscall.sh (the insmod-era functions.sh words its loads "% insmod test_modules/NAME.ko") ----

SYSCALL = "test_klp_syscall"


@scenario("test-syscall.sh", "patch getpid syscall while being heavily hammered", style="insmod")
def patch_getpid_syscall_while_being_heavily_hammered(st):
    nproc = 1                          # getconf _NPROCESSORS_ONLN: the lab's machine has one CPU
    pids = [st.spawn("test_klp-call_getpid") for _ in range(nproc)]
    pid_list = ",".join(map(str, pids))
    st.load_lp(SYSCALL, klp_pids=pid_list)
    expect(st.loop_until(lambda: st.cat("/sys/kernel/test_klp_syscall/npids") == "0"),
           "the getpid callers did not all reach the new getpid")
    pending = st.cat("/sys/kernel/test_klp_syscall/npids")
    st.log(f"{SYSCALL}: Remaining not livepatched processes: {pending}")
    for pid in pids:
        st.kill(pid)
    st.disable_lp(SYSCALL)
    st.unload_lp(SYSCALL)
    return "\n".join([
        f"% insmod test_modules/{SYSCALL}.ko klp_pids={pid_list}", enable(SYSCALL),
        f"{SYSCALL}: Remaining not livepatched processes: 0", disable(SYSCALL), f"% rmmod {SYSCALL}"])

def run(script, title, **boot_args):
    """Play one scenario on a fresh kernel: (expected log, the kernel's log)."""
    from .selftest import Selftest
    fn = find(script, title)
    with Selftest(style=STYLES.get(script, "modprobe"), **boot_args) as st:
        st.start_test(title)
        expected = fn(st)
        return expected, st.result()


def find(script, title):
    for s, t, fn in SCENARIOS:
        if s == script and t == title:
            return fn
    raise SelftestError(f"no scenario {title!r} in {script}; `lab selftest --list` lists them")
