"""``python -m ntkcheck.cli``: the ``ntkcheck`` command (see :mod:`ntkcheck.cli`)."""

import sys

from ntkcheck.cli import main

sys.exit(main())
