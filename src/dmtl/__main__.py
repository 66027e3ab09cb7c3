"""``python -m dmtl``: the command line (also what ``mpiexec -n K python -m dmtl run ...`` starts)."""

import sys

from dmtl.cli import main

sys.exit(main())
