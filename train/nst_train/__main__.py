"""``python -m nst_train`` is ``nst-train`` (``torchrun -m nst_train`` works too)."""

import sys

from .cli import train_main

sys.exit(train_main())
