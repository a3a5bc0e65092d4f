"""``python -m milepost.cli``: the `milepost` command."""

from __future__ import annotations

import sys

from milepost.cli import main

sys.exit(main())
