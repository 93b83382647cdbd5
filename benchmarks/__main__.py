"""``python -m benchmarks [--quick]``: the caller-cost table (see README.md)."""

import sys

from .caller_cost import main

sys.exit(main())
