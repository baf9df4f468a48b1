"""``python -m ttq_lib.cli``: the ``ttq`` command (torchrun starts it this way)."""
import sys

from . import main

sys.exit(main())
