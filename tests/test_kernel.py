"""Tests for the booted kernel (lab.boot, lab.system, lab.kernel, lab.report): determinism,
progress of every task kind, the eternal sleeper, signals and system call restart, oopses."""
import itertools

import pytest

import lab
from lab import events as ev
from lab.kernel import TaskState

SIGUSR1, SIGUSR2, SIGTERM = 10, 12, 15
READER = "pipe-reader"
USER_WORKERS = ("cap-user", "cat-cmdline")
KTHREADS = ("kfreezerd", "kannotated", "kworker/stats")


def progress(system):
    """What each task has done so far: user tasks count system calls, kthreads loop iterations."""
    return {t.name: (t.syscalls if t.kind == "user" else t.iterations) for t in system.tasks}


# ---- determinism ----

def test_two_runs_with_equal_inputs_give_equal_digests(image):
    a = lab.boot(image, seed=3)
    b = lab.boot(image, seed=3)
    a.run(1_000_000)
    b.run(1_000_000)
    assert a.digest == b.digest
    assert [e.to_dict() for e in a.events] == [e.to_dict() for e in b.events]


def test_an_event_posted_on_a_hot_path_is_the_event_add_makes_for_every_event_type():
    import dataclasses
    import hashlib
    import json
    for cls in ev.EVENT_TYPES.values():
        names = [f.name for f in dataclasses.fields(cls)][2:]
        values = [(i, "x") if name in ("regs", "code", "stack", "functions") else 7 + i
                  for i, name in enumerate(names)]
        added, posted = ev.EventLog(), ev.EventLog()
        seen = []
        for log in (added, posted):
            log.subscribe(seen.append)
        added.add(cls, 3, **dict(zip(names, values)))
        a = added.add(cls, 5, **dict(zip(names, values)))
        ev.poster(cls)(posted, 3, *values)
        p = posted.post(cls, 5, *values)
        assert type(p) is cls and p == a and repr(p) == repr(a) and p.to_dict() == a.to_dict()
        assert p.seq == 1 and seen[:2] == seen[2:] == [added.events[0], a]
        with pytest.raises(dataclasses.FrozenInstanceError):
            p.at = 6
        # the digest: sha256 over each event's canonical JSON without its sequence number
        lines = b"".join(json.dumps({k: v for k, v in e.to_dict().items() if k != "seq"}, sort_keys=True,
                                    separators=(",", ":")).encode() + b"\n" for e in added)
        expected = hashlib.sha256(b"" if cls.observed else lines).hexdigest()
        assert added.digest == posted.digest == expected


def test_a_pending_ticks_first_try_is_when_it_falls_due():
    """Kernel.run takes the due instant of a tick not yet stalled as
    _next_tick itself, without asking tick_due_at(): the first try of the
    stall rule's offsets must be on time."""
    from lab import kernel
    assert kernel._stall_offset(0) == 0


def test_different_seeds_give_different_digests(image):
    digests = set()
    for seed in (0, 1, 2):
        system = lab.boot(image, seed=seed)
        system.run(1_000_000)
        digests.add(system.digest)
    assert len(digests) == 3


def test_splitting_a_run_in_two_gives_the_same_digest_as_one_run(image):
    whole = lab.boot(image)
    whole.run(2_000_000)
    split = lab.boot(image)
    split.run(1_000_000)
    split.run(1_000_000)
    assert split.clock == whole.clock
    assert split.digest == whole.digest


def test_splitting_a_run_while_the_tick_waits_for_interrupts_gives_the_same_digest(image):
    whole = lab.boot(image)
    whole.run(2_000_000)
    # seed 0 has no jitter: a tick is due a quantum after the last one was delivered
    due, held_back = whole.kernel.quantum, None
    for irq in (e for e in whole.events if isinstance(e, ev.Interrupt)):
        if irq.at > due + 1:
            held_back = due     # interrupts were off when this tick came due
            break
        due = irq.at + whole.kernel.quantum
    if held_back is None:
        pytest.skip("no tick had to wait for interrupts in this run")
    split = lab.boot(image)
    split.run(held_back + 1 - split.clock)
    split.run(whole.clock - split.clock)
    assert split.clock == whole.clock
    assert split.digest == whole.digest


def test_run_stops_exactly_at_the_instruction_count(booted):
    start = booted.clock
    assert booted.run(123_457) == start + 123_457
    assert booted.clock == start + 123_457
    booted.run(1)
    assert booted.clock == start + 123_458


def test_run_until_stops_at_the_first_slice_where_the_condition_holds(booted):
    booted.run(until=lambda s: any("kannotated: started" in line for line in s.console))
    assert "kannotated: started (kgr_task_safe annotated)" in booted.console
    # the limit still applies when the condition never holds
    start = booted.clock
    booted.run(50_000, until=lambda s: False)
    assert booted.clock == start + 50_000


def test_run_without_a_limit_or_condition_is_refused(booted):
    with pytest.raises(lab.KernelError, match="instructions=N or until"):
        booted.run()


def test_events_are_numbered_in_order_and_stamped_no_later_than_the_clock(settled):
    events = settled.events
    assert [e.seq for e in events] == list(range(len(events)))
    stamps = [e.at for e in events]
    assert stamps == sorted(stamps)
    assert stamps[-1] <= settled.clock


def test_every_context_switch_is_both_counted_by_the_task_and_logged(image):
    system = lab.boot(image)
    system.run(1_000_000)
    switches = [e for e in system.events if isinstance(e, ev.ContextSwitch)]
    assert sum(t.switches for t in system.tasks) == len(switches) > 0
    for e in switches:
        assert e.prev != e.next


# ---- boot and the default workload ----

def test_boot_prints_the_banner_and_the_workload(settled):
    console = settled.console
    assert console[0] == "Lab kernel booting"
    assert "Command line: workload=default" in console
    assert f"workload default: {len(settled.tasks)} tasks" in console


def test_the_default_workload_has_the_documented_tasks(settled):
    tasks = [(t.tid, t.name, t.kind) for t in settled.tasks]
    assert tasks[:7] == [
        (0, "swapper/0", "kthread"),
        (1, "cap-user", "user"),
        (2, "cat-cmdline", "user"),
        (3, "pipe-reader", "user"),
        (4, "kfreezerd", "kthread"),
        (5, "kannotated", "kthread"),
        (6, "kworker/stats", "kthread"),
    ]
    assert settled.task(3).name == READER and settled.task(READER).tid == 3


def test_every_task_kind_makes_progress(settled):
    before = progress(settled)
    settled.run(1_000_000)
    after = progress(settled)
    for name in USER_WORKERS + KTHREADS:
        assert after[name] > before[name], f"{name} made no progress"
    assert settled.task("cap-user").kind == "user" and settled.task("kfreezerd").kind == "kthread"


def test_the_eternal_sleeper_stays_asleep_in_pipe_wait_readable(settled):
    reader = settled.task(READER)
    before = (reader.syscalls, reader.switches)
    settled.run(3_000_000)
    assert reader.state == TaskState.SLEEPING
    assert reader.sleeps_in() == "pipe_wait_readable"
    assert (reader.syscalls, reader.switches) == before
    assert not [line for line in settled.console if line.startswith(f"{READER}[")]


def test_the_command_line_reaches_proc_cmdline(image):
    system = lab.boot(image, cmdline="lab.answer=42")
    system.run(500_000)
    assert "cat-cmdline[2]: /proc/cmdline: workload=default lab.answer=42" in system.console



def test_the_unannotated_workload_adds_a_kthread_that_makes_progress(image):
    system = lab.boot(image, workload="unannotated")
    system.run(500_000)
    kthread = system.task("kunannotated")
    assert kthread.kind == "kthread"
    before = kthread.iterations
    system.run(1_000_000)
    assert kthread.iterations > before


def test_the_hammer_workload_starts_nr_hammer_tasks_that_all_make_progress(image):
    system = lab.boot(image, workload="hammer", cmdline="nr_hammer=4")
    system.run(500_000)
    hammers = [t for t in system.tasks if t.name == "hammer"]
    assert len(hammers) == 4
    before = [t.syscalls for t in hammers]
    system.run(1_000_000)
    assert all(t.syscalls > b for t, b in zip(hammers, before))


def test_64_hammer_tasks_all_make_progress_and_the_tasks_after_them_still_get_their_files(image):
    """NR_TASKS is 72: 64 hammers, pipe-reader, kfreezerd, kmodloader and the
    idle task fit, each with its own kernel and user stack; pipe-reader, made
    after the hammers, still finds free files for its pipe and sleeps on it."""
    system = lab.boot(image, workload="hammer", params={"nr_hammer": 64})
    system.run(1_000_000)
    hammers = [t for t in system.tasks if t.name == "hammer"]
    assert len(hammers) == 64 and len(system.tasks) == 68
    before = [t.syscalls for t in hammers]
    system.run(3_000_000)        # two rounds of the 64 hammers, a quantum each
    assert all(t.syscalls > b for t, b in zip(hammers, before))
    reader = system.task(READER)
    assert reader.state == TaskState.SLEEPING and reader.sleeps_in() == "pipe_wait_readable"
    assert not system.report()["oopses"]


def test_an_unknown_workload_is_refused_naming_the_choices(image):
    with pytest.raises(lab.LabError, match="'nope'.*default, unannotated, quiet, hammer, writeback"):
        lab.boot(image, workload="nope")


def test_a_quantum_below_1000_instructions_is_refused(image):
    with pytest.raises(lab.KernelError, match="quantum 999"):
        lab.boot(image, quantum=999)


def test_a_command_line_of_255_bytes_or_more_is_refused(image):
    with pytest.raises(lab.KernelError, match="255 bytes"):
        lab.boot(image, cmdline="x" * 255)


def test_an_unknown_task_is_refused_naming_the_ones_that_exist(settled):
    with pytest.raises(lab.KernelError, match="no task named 'nobody'.*cap-user"):
        settled.task("nobody")
    with pytest.raises(lab.KernelError, match="no task 99"):
        settled.task(99)


# ---- signals ----

def reader_lines(system):
    return [line for line in system.console if line.startswith(f"{READER}[3]: ")]


def test_sigusr1_with_sa_restart_runs_the_handler_and_restarts_the_sleeping_read(settled):
    reader = settled.task(READER)
    settled.send_signal(READER, SIGUSR1)
    settled.run(1_000_000)
    assert reader_lines(settled) == ["pipe-reader[3]: caught signal 10"]   # no "read returned"
    assert reader.signals == 1
    assert reader.state == TaskState.SLEEPING
    assert reader.sleeps_in() == "pipe_wait_readable"
    assert [(s["tid"], s["sig"]) for s in settled.report()["signals"]] == [(3, SIGUSR1)]


def test_sigusr2_without_sa_restart_fails_the_sleeping_read_with_eintr(settled):
    reader = settled.task(READER)
    settled.send_signal(reader.tid, SIGUSR2)
    settled.run(1_000_000)
    assert reader_lines(settled) == ["pipe-reader[3]: caught signal 12", "pipe-reader[3]: read returned -4"]
    assert reader.signals == 1
    assert reader.state == TaskState.SLEEPING           # it reads again, and sleeps again
    assert reader.sleeps_in() == "pipe_wait_readable"


def test_a_signal_without_a_handler_kills_the_task(settled):
    reader = settled.task(READER)
    settled.send_signal(READER, SIGTERM)
    settled.run(500_000)
    assert reader_lines(settled) == []          # Linux does not log a default-action kill
    exits = [e for e in settled.events if e.kind == "exit" and e.tid == reader.tid]
    assert [e.code for e in exits] == [128 + SIGTERM]
    assert reader.state == TaskState.DEAD and not reader.oopsed
    assert reader.exit_code == 128 + SIGTERM
    with pytest.raises(lab.KernelError, match="has exited"):
        settled.send_signal(READER, SIGUSR1)


def test_a_signal_to_a_kernel_thread_is_refused(settled):
    with pytest.raises(lab.KernelError, match="kernel thread"):
        settled.send_signal("kfreezerd", SIGUSR1)


@pytest.mark.parametrize("sig", [0, 32, -1])
def test_a_signal_number_outside_1_to_31_is_refused(settled, sig):
    with pytest.raises(lab.KernelError, match=f"signal {sig} is not a signal number"):
        settled.send_signal(READER, sig)


# ---- oops ----

def test_a_fault_injected_in_one_task_oopses_it_while_the_others_run_on(settled):
    victim = settled.task("cap-user")
    settled.inject_fault("cap-user")
    settled.run(500_000)

    assert victim.oopsed and victim.state == TaskState.DEAD
    report = settled.report()
    (oops,) = report["oopses"]
    assert oops["tid"] == victim.tid
    assert oops["where"].startswith("fault_inject_crash")
    assert oops["address"] == 0x10
    assert {t["name"]: t["state"] for t in report["tasks"]}["cap-user"] == "oopsed"
    assert report["panic"] is None
    console = settled.console
    assert "BUG: unable to handle page fault for address: 0000000000000010" in console
    assert f"CPU: 0 PID: {victim.tid} Comm: cap-user" in console

    before = progress(settled)
    settled.run(1_000_000)
    after = progress(settled)
    assert after["cap-user"] == before["cap-user"]
    for name in ("cat-cmdline",) + KTHREADS:
        assert after[name] > before[name], f"{name} stopped after the oops"
    assert settled.task(READER).sleeps_in() == "pipe_wait_readable"


def test_a_call_through_a_null_function_pointer_oopses_the_task(settled):
    capable = settled.image.function("capable")
    settled.machine.write_code(capable.address, bytes.fromhex("31c0" "ffe0"))   # xor eax, eax; jmp rax
    slices = itertools.count()
    settled.run(500_000, until=lambda s: next(slices) > 20_000)   # a guard: the bug never gets there
    oopses = settled.report()["oopses"]
    assert [(o["tid"], o["address"]) for o in oopses] == [(settled.task("cap-user").tid, 0)]
    assert settled.task("cat-cmdline").state != TaskState.DEAD


# ---- the report ----

def test_the_json_report_has_the_design_keys(settled):
    report = settled.report()
    assert report["schema"] == 1
    for key in ("model", "seed", "quantum", "instructions", "digest", "tasks", "patches", "signals",
                "violations", "console"):
        assert key in report, key
    assert report["model"] == "kgraft"
    assert (report["seed"], report["quantum"]) == (0, 20_000)
    assert report["instructions"] == settled.clock
    assert report["digest"] == settled.digest
    assert report["patches"] == [] and report["violations"] == [] and report["signals"] == []
    assert report["console"] == settled.console
    assert len(report["tasks"]) == len(settled.tasks)
    for task in report["tasks"]:
        for key in ("tid", "name", "kind", "state", "universe", "migrated_at", "migrated_by"):
            assert key in task, key
        assert task["kind"] in ("user", "kthread")
        assert task["universe"] in ("old", "new")
    reader = report["tasks"][3]
    assert (reader["name"], reader["state"], reader["sleeps_in"]) == (READER, "sleeping", "pipe_wait_readable")
