"""The mutation run of ``ntkcheck verify --mutants``: the property suite against each mutant of the catalogue.

For every mutant the shipped properties run in a fresh pytest process with
``--ntkcheck-mutant NAME`` (Hypothesis without shrinking), stopping at the first
failing property (``-x``).  A mutant is *killed* when a property fails; the property
and its claim are recorded.  It *survives* when every property passes — or when the
run ends some other way (a collection error, a crash, the time limit), which is
reported with the reason: only a failing property counts as a kill.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ntkcheck.testing.mutants import catalogue


@dataclass(frozen=True)
class MutantOutcome:
    """What the property suite did to one mutant."""

    name: str
    description: str
    killed: bool
    killed_by: str | None  # node id of the first failing property
    killed_by_claim: str | None
    seconds: float
    note: str = ""

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _claim_of(nodeid: str, records: dict) -> str | None:
    for claim, ex in records.get("examples", {}).items():
        if nodeid in ex.get("nodeids", []):
            return claim
    return None


def xdist_args(workers: int) -> list[str]:
    """pytest-xdist arguments for ``workers`` processes (none when 1 or when xdist is not installed)."""
    if workers <= 1 or importlib.util.find_spec("xdist") is None:
        return []
    return ["-n", str(workers)]


def run_mutant(
    name: str,
    pytest_command: Callable[..., list[str]],
    *,
    profile: str,
    device: str,
    dtype: str,
    workers: int,
    timeout: float,
) -> MutantOutcome:
    """Run the properties against mutant ``name``; ``pytest_command`` builds the command line (see ``verify``)."""
    mutant = catalogue()[name]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        records_path = Path(tmp) / "records.json"
        cmd = pytest_command(
            profile=profile,
            device=device,
            dtype=dtype,
            records=records_path,
            extra=["-x", "-q", f"--ntkcheck-mutant={name}", *xdist_args(workers)],
        )
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=os.getcwd())
        except subprocess.TimeoutExpired:
            return MutantOutcome(
                name,
                mutant.description,
                False,
                None,
                None,
                time.perf_counter() - start,
                f"no property failed within the {timeout:.0f} s limit",
            )
        records = json.loads(records_path.read_text()) if records_path.exists() else {}
    seconds = time.perf_counter() - start
    failed = records.get("failed", [])
    if proc.returncode in (1, 2) and failed:  # 2: pytest-xdist reports -x's early stop as an interruption
        return MutantOutcome(name, mutant.description, True, failed[0], _claim_of(failed[0], records), seconds)
    if proc.returncode == 0:
        return MutantOutcome(name, mutant.description, False, None, None, seconds, "every property passed")
    tail = " ".join((proc.stdout + proc.stderr).strip().splitlines()[-3:])[-300:]
    return MutantOutcome(
        name,
        mutant.description,
        False,
        None,
        None,
        seconds,
        f"pytest exited {proc.returncode} without a failing property: {tail}",
    )


def run_mutants(
    names: Sequence[str] | None,
    pytest_command: Callable[..., list[str]],
    *,
    profile: str = "ci",
    device: str = "cpu",
    dtype: str = "float64",
    workers: int = 2,
    timeout: float = 900.0,
    progress: bool = True,
) -> list[MutantOutcome]:
    """Run the properties once per mutant (all of the catalogue when ``names`` is None or empty)."""
    known = catalogue()
    chosen = list(names) if names else list(known)
    unknown = [n for n in chosen if n not in known]
    if unknown:
        raise ValueError(f"mutants must be names of the catalogue {sorted(known)}, got unknown {unknown}")
    from tqdm import tqdm

    outcomes = []
    bar = tqdm(chosen, desc="mutants", unit="mutant", disable=not progress)
    for name in bar:
        bar.set_postfix_str(name)
        outcomes.append(
            run_mutant(
                name, pytest_command, profile=profile, device=device, dtype=dtype, workers=workers, timeout=timeout
            )
        )
    return outcomes
