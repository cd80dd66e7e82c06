"""``python -m localearn``: the CLI, as ``torchrun -m localearn train --parallel ...`` launches it."""

import sys

from localearn.cli import main

sys.exit(main())
