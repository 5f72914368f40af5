"""python -m lab.gdbserver FILE [--port P] [--image ELF]: `lab trace gdb` on its own."""
import sys

from . import run

sys.exit(run())
