"""The ntkcheck pytest plugin, registered with the ``pytest11`` entry point (active wherever ntkcheck is installed).

It gives any test suite, ntkcheck's own and a downstream project's, with no conftest:

* **Hypothesis profiles** ``dev`` (10 examples), ``ci`` (Hypothesis' ci profile: derandomized,
  ``print_blob``; 25 examples), ``ci-random`` (``ci`` not derandomized: ``--hypothesis-seed N``
  picks the draws, for repeated runs that hunt flakes), ``thorough`` (300) and ``gpu`` (100), all
  without deadline.  One is loaded only when asked for, by ``--ntkcheck-profile NAME`` or the
  ``NTKCHECK_PROFILE`` environment variable (Hypothesis' own ``--hypothesis-profile`` also works).
* **The backend under test**: ``--ntkcheck-device`` (cpu|cuda, default ``NTKCHECK_DEVICE`` or cpu) and
  ``--ntkcheck-dtype`` (float64|float32, default ``NTKCHECK_DTYPE`` or float64), served by the
  session fixtures ``device`` and ``dtype`` (CUDA skips cleanly without a GPU).  TF32 is switched
  off for the session unless ``--ntkcheck-tf32`` is given.  Under pytest-xdist each worker
  takes its share of the cores (``torch.set_num_threads``) instead of oversubscribing them.
* **The claim recorder**: every test runs with its own :class:`~ntkcheck.testing.claims.Recorder`;
  what its checks measured and the Hypothesis examples it ran (and discarded) travel in the
  test report's ``user_properties``, so they are merged on the controller under pytest-xdist
  too.  ``--ntkcheck-claims-json PATH`` writes the merged records (the input of the claims report).
  A test names its claim with ``@pytest.mark.claim("key")`` (or a module-level ``pytestmark``).
* **Discard limit**: ``--ntkcheck-max-discard 0.1`` fails a Hypothesis test whose draws were
  rejected (``assume``, filters) more than that fraction of the time, so a property cannot
  quietly test a narrow corner of its strategy.
* **Mutants**: ``--ntkcheck-mutant NAME`` applies one plausible bug from
  :mod:`ntkcheck.testing.mutants` to the library before collection (and turns Hypothesis'
  shrinking off: a mutant only has to be caught, not minimised).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Generator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, Phase, settings

from ntkcheck._support.validation import DTYPES
from ntkcheck.testing.claims import Recorder, recording

PROFILES = ("dev", "ci", "ci-random", "thorough", "gpu")
_PROPERTY = "ntkcheck"  # key of the user_properties entry a test's records travel in

_common: dict[str, Any] = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("dev", max_examples=10, **_common)
settings.register_profile("ci", parent=settings.get_profile("ci"), max_examples=25, **_common)
settings.register_profile("ci-random", parent=settings.get_profile("ci"), derandomize=False)
settings.register_profile("thorough", max_examples=300, **_common)
settings.register_profile("gpu", max_examples=100, **_common)


@dataclass(frozen=True)
class Backend:
    """The device and dtype the suite runs on."""

    device: torch.device
    dtype: torch.dtype


_backend = Backend(
    torch.device(os.environ.get("NTKCHECK_DEVICE", "cpu")),
    DTYPES.get(os.environ.get("NTKCHECK_DTYPE", "float64"), torch.float64),
)


def backend() -> Backend:
    """The backend chosen for this run (options or environment; cpu/float64 by default)."""
    return _backend


@dataclass
class ClaimExamples:
    """Hypothesis examples run and discarded by the tests of one claim."""

    tests: int = 0
    examples: int = 0
    discarded: int = 0
    nodeids: list[str] = field(default_factory=list)


@dataclass
class RunRecords:
    """Everything the run's tests reported: check records, curves and examples per claim."""

    recorder: Recorder = field(default_factory=Recorder)
    examples: dict[str, ClaimExamples] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            **self.recorder.to_dict(),
            "examples": {k: vars(v) for k, v in self.examples.items()},
            "failed": self.failed,
        }


_RUN = pytest.StashKey[RunRecords]()
_EXCESS = pytest.StashKey[str]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ntkcheck", "ntkcheck property suite")
    group.addoption(
        "--ntkcheck-device",
        choices=("cpu", "cuda"),
        default=None,
        help="device under test (default: NTKCHECK_DEVICE or cpu)",
    )
    group.addoption(
        "--ntkcheck-dtype",
        choices=tuple(DTYPES),
        default=None,
        help="dtype under test (default: NTKCHECK_DTYPE or float64)",
    )
    group.addoption(
        "--ntkcheck-profile",
        choices=PROFILES,
        default=None,
        help="load this Hypothesis profile (default: NTKCHECK_PROFILE if set)",
    )
    group.addoption("--ntkcheck-tf32", action="store_true", help="leave TF32 matmuls as torch has them")
    group.addoption(
        "--ntkcheck-claims-json",
        metavar="PATH",
        default=None,
        help="write the claim records of the run (checks, worst errors, examples) to PATH",
    )
    group.addoption(
        "--ntkcheck-mutant",
        metavar="NAME",
        default=None,
        help="apply this mutant of ntkcheck.testing.mutants.CATALOGUE before collection",
    )
    group.addoption(
        "--ntkcheck-max-discard",
        metavar="FRACTION",
        type=float,
        default=None,
        help="fail a Hypothesis test that discards more than FRACTION of its draws (assume, filters)",
    )


def pytest_configure(config: pytest.Config) -> None:
    global _backend
    config.addinivalue_line("markers", "claim(key): the claim of ntkcheck.testing.claims.CLAIMS a test checks")
    config.addinivalue_line("markers", "slow: statistical checks that take tens of seconds")
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped without one")
    device = config.getoption("--ntkcheck-device") or os.environ.get("NTKCHECK_DEVICE", "cpu")
    dtype = config.getoption("--ntkcheck-dtype") or os.environ.get("NTKCHECK_DTYPE", "float64")
    if dtype not in DTYPES:
        raise pytest.UsageError(f"NTKCHECK_DTYPE must be one of {sorted(DTYPES)}, got {dtype!r}")
    if device not in ("cpu", "cuda"):
        raise pytest.UsageError(f"NTKCHECK_DEVICE must be cpu or cuda, got {device!r}")
    _backend = Backend(torch.device(device), DTYPES[dtype])
    worker = getattr(config, "workerinput", None)
    if worker is not None:  # a pytest-xdist worker: share the cores instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(worker.get("workercount", 1))))
    if not config.getoption("--ntkcheck-tf32"):
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    profile = config.getoption("--ntkcheck-profile") or os.environ.get("NTKCHECK_PROFILE")
    if profile:
        if profile not in PROFILES:
            raise pytest.UsageError(f"NTKCHECK_PROFILE must be one of {list(PROFILES)}, got {profile!r}")
        settings.load_profile(profile)
    mutant = config.getoption("--ntkcheck-mutant")
    if mutant:
        from ntkcheck.testing.mutants import apply

        try:
            apply(mutant)
        except KeyError as exc:
            raise pytest.UsageError(str(exc.args[0])) from None
        settings.register_profile(
            "ntkcheck-mutant", parent=settings.default, phases=[Phase.explicit, Phase.reuse, Phase.generate]
        )
        settings.load_profile("ntkcheck-mutant")
    config.stash[_RUN] = RunRecords()


def pytest_report_header(config: pytest.Config) -> list[str]:
    b = backend()
    lines = [f"ntkcheck: device {b.device}, dtype {str(b.dtype).removeprefix('torch.')}"]
    if config.getoption("--ntkcheck-mutant"):
        lines.append(f"ntkcheck: MUTANT {config.getoption('--ntkcheck-mutant')} applied")
    return lines


@pytest.fixture(scope="session")
def device() -> torch.device:
    """The device under test; CUDA runs skip cleanly without a GPU."""
    dev = backend().device
    if dev.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("the device under test is cuda but no CUDA device is available")
    return dev


@pytest.fixture(scope="session")
def dtype() -> torch.dtype:
    """The dtype under test (float64 for claims, float32 with its own tolerances)."""
    return backend().dtype


def _claim_of(item: pytest.Item) -> str | None:
    marker = item.get_closest_marker("claim")
    return str(marker.args[0]) if marker is not None and marker.args else None


def _count_cases(stats: dict[str, Any]) -> tuple[int, int]:
    """(examples run, examples discarded) from Hypothesis' statistics of one test, over all phases."""
    run = discarded = 0
    for phase in stats.values():
        if not isinstance(phase, dict):
            continue
        for case in phase.get("test-cases", []):
            if case.get("status") in ("valid", "interesting"):
                run += 1
            elif case.get("status") in ("invalid", "overrun"):
                discarded += 1
    return run, discarded


@pytest.hookimpl(hookwrapper=True, trylast=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    """Run the test with its own recorder; count its Hypothesis examples; attach both to its report."""
    from hypothesis import statistics

    collector: Any = statistics.collector  # typed DynamicVariable[None] by Hypothesis; it holds a callback

    counts: dict[str, int] = {}
    outer = collector.value

    def note(stats: dict[str, Any]) -> None:
        counts["examples"], counts["discarded"] = _count_cases(stats)
        if outer is not None:
            outer(stats)

    with recording(Recorder()) as rec, collector.with_value(note):
        yield
    is_hypothesis = hasattr(getattr(item, "obj", None), "hypothesis")
    limit = item.config.getoption("--ntkcheck-max-discard")
    total = counts.get("examples", 0) + counts.get("discarded", 0)
    if is_hypothesis and limit is not None and total and counts["discarded"] > limit * total:
        item.stash[_EXCESS] = (
            f"{item.nodeid} discarded {counts['discarded']} of its {total} draws "
            f"({counts['discarded'] / total:.0%} > --ntkcheck-max-discard {limit:.0%}): the "
            f"property tests a narrower set than its strategy claims to draw"
        )
    payload = {
        "claim": _claim_of(item),
        "examples": counts.get("examples", 0 if is_hypothesis else 1),
        "discarded": counts.get("discarded", 0),
        "recorder": rec.to_dict(),
    }
    item.user_properties.append((_PROPERTY, json.dumps(payload)))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """Turn a passing Hypothesis test that discarded too many draws into a failure."""
    outcome = yield
    report = outcome.get_result()
    message = item.stash.get(_EXCESS, None)
    if report.when == "call" and report.passed and message:
        report.outcome = "failed"
        report.longrepr = message


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when != "call":
        return
    for name, value in report.user_properties:
        if name != _PROPERTY:
            continue
        payload = json.loads(str(value))
        run = _current_run
        if run is None:
            return
        run.recorder.merge(Recorder.from_dict(payload["recorder"]))
        claims = [payload["claim"]] if payload["claim"] else sorted(payload["recorder"]["records"])
        for claim in claims:
            ex = run.examples.setdefault(claim, ClaimExamples())
            ex.tests += 1
            ex.examples += payload["examples"]
            ex.discarded += payload["discarded"]
            ex.nodeids.append(report.nodeid)
        if report.failed:
            run.failed.append(report.nodeid)


_current_run: RunRecords | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    global _current_run
    _current_run = session.config.stash[_RUN]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    path = session.config.getoption("--ntkcheck-claims-json")
    if not path or hasattr(session.config, "workerinput"):  # an xdist worker: the controller writes
        return
    write_json_atomically(Path(path), session.config.stash[_RUN].to_dict())


def write_json_atomically(path: Path, data: object) -> None:
    """Write JSON to a temporary file beside ``path`` and move it into place (never a half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=1, default=float)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
