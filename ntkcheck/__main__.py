"""``python -m ntkcheck``: the ``ntkcheck`` command (see :mod:`ntkcheck.cli`)."""

import sys

from ntkcheck.cli import main

sys.exit(main())
