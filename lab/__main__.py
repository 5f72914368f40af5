"""python -m lab: the `lab` command."""
import sys

from .cli import main

sys.exit(main())
