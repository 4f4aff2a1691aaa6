"""`python -m <package>.cli`: how a command starts another (the rollout's traffic process)."""

import sys

from . import main

sys.exit(main())
