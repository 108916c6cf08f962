"""``python -m gap_study``: the ``gap-study`` command (``gap_study.cli``)."""

import sys

from gap_study.cli import main

sys.exit(main())
