"""pytest plugin used by ``ntkcheck verify``: writes the claim records of the run to JSON.

Activated with ``-p ntkcheck.pytest_plugin``; the path comes from ``NTKCHECK_CLAIMS_JSON``.
"""

from __future__ import annotations

import os
from pathlib import Path

from ntkcheck.claims import dump_records


def pytest_sessionfinish(session, exitstatus) -> None:  # noqa: ARG001 - pytest hook signature
    path = os.environ.get("NTKCHECK_CLAIMS_JSON")
    if path:
        dump_records(Path(path))
