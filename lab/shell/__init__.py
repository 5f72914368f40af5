"""shell - `lab shell`: an interactive or scripted session on one booted kernel, with time travel over its recording."""
from .commands import COMMANDS, Command, ShellError, parse
from .output import Output
from .progress import Interrupt, RunProgress
from .session import Session

__all__ = ["Session", "Output", "Command", "COMMANDS", "ShellError", "parse", "RunProgress", "Interrupt"]
