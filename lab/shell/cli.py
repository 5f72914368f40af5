"""cli - `lab shell`: its checks before any work, the boot, and the session (interactive, or a script).

lab/cli.py adds the parser entry and hands args to run(args, image, params)
once the options it shares with `lab run` are checked.  Exit status: 0; 1 when
a check failed in the session (a patch the kernel refused, a panic, a
consistency violation); 2 on a usage error, found before the kernel boots
(an option, a script line that does not parse) or, in a script, at the line
that cannot be done.
"""
from __future__ import annotations

import pathlib
import sys

from ..errors import UsageError
from . import script as scripting
from .output import Output


def read_script(args):
    """(name, lines) of the script to run, or (None, None) for an interactive session."""
    if args.script is not None:
        path = pathlib.Path(args.script)
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise UsageError(f"--script {args.script}: not a text file; give the shell's commands, one a line") \
                from None
        return args.script, scripting.read(text, args.script)
    if not sys.stdin.isatty():
        return "stdin", scripting.read(sys.stdin.read(), "stdin")
    return None, None


def run(args, image, params):
    from ..kernel import DEFAULT_QUANTUM
    from ..system import boot
    from .session import Session
    name, lines = read_script(args)          # every line parsed before the kernel boots
    interactive = lines is None
    out = Output(record_svg=args.svg is not None)
    with boot(image, workload=args.workload, seed=args.seed, quantum=args.quantum or DEFAULT_QUANTUM,
              model=args.model, record=True, observe=True, params=params or None) as system:
        session = Session(system, out, interactive=interactive)
        try:
            session.banner()
            if interactive:
                from .terminal import interact
                status = interact(session)
            else:
                status = scripting.run(session, lines, name)
        finally:
            session.close()
            if args.svg is not None:
                out.save_svg(args.svg, title=f"lab shell{' --script ' + name if name else ''}")
    return status
