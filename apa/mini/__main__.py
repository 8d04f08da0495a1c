"""`python -m apa.mini ...`: see `apa.mini.cli` (kept apart so that importing apa.mini never runs it)."""

import sys

from apa.mini.cli import main

sys.exit(main())
