"""Tests for lab.events: the digest's lines are the JSON encoder's, byte for byte."""
from lab import boot
from lab import events as ev

from livepatch_helpers import CAPABLE


def test_each_digest_line_is_what_the_json_encoder_writes_for_every_event_of_a_patched_run():
    with boot(model="klp", observe=True, signal_after=300_000) as system:
        system.run(1_000_000)
        system.apply_patch(CAPABLE)
        system.run_until_patched(6_000_000)
        events = list(system.events)
    assert {e.kind for e in events} >= {"booted", "switch", "irq", "console", "syscall", "call", "migrated",
                                        "transition-start", "patch", "signal"}
    for e in events:
        assert ev._digest_line(e) == ev._digest_line_by_encoder(e), e


def test_a_digest_line_escapes_and_nests_as_the_encoder_does():
    odd = ["plain", "quote \" and back\\slash", "tab\tnew\nline\x01", "caf\u00e9 \u2603 \U0001f600", ""]
    events = [ev.Console(0, 1, tid=0, level=6, text=t) for t in odd]
    events += [ev.Migrated(1, 2**63, tid=-1, by="x", universe=0, stack=tuple(odd)),
               ev.Oops(2, 0, tid=3, reason="r\u00ff", address=None, rip=0, where="w",
                       regs=(("rax", 1), ("rbx", 2**64 - 1)), code=(("a", None), (True, False, -7)))]
    for e in events:
        assert ev._digest_line(e) == ev._digest_line_by_encoder(e), e
