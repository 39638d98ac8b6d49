"""The ntkcheck pytest plugin as a downstream project sees it: no conftest, only the installed entry point."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

DOWNSTREAM = (  # three lines, as a downstream project would write them
    "import hypothesis, ntkcheck, ntkcheck.testing.strategies as S, torch\n"
    '@hypothesis.given(arch=S.architectures(families=("mlp",), max_depth=2, max_width=8, max_out=1), seed=S.seeds())\n'
    "def test_kernel_is_symmetric(arch, seed, device, dtype): k = ntkcheck.ntk(arch.build(dtype=dtype, device=device), "
    "S.inputs(seed, 3, arch.in_features, dtype=dtype, device=device)); "
    "assert k.dtype == dtype and torch.allclose(k, k.transpose(0, 1))\n"
)


def _pytest(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_three_line_downstream_file_runs_with_strategies_and_fixtures(tmp_path: Path):
    (tmp_path / "test_downstream.py").write_text(DOWNSTREAM)
    assert len(DOWNSTREAM.strip().splitlines()) == 3
    result = _pytest(tmp_path, "-q", "--ntkcheck-profile=dev", "--ntkcheck-dtype=float32")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
    assert not list(tmp_path.glob("conftest.py"))


def test_recorder_merges_checks_and_examples_across_xdist_workers(tmp_path: Path):
    pytest.importorskip("xdist")
    (tmp_path / "test_claims.py").write_text(
        textwrap.dedent("""\
        import pytest, torch
        from hypothesis import assume, given, strategies as st
        from ntkcheck.testing.claims import check_close
        from ntkcheck.testing.tolerances import tolerance

        pytestmark = pytest.mark.claim("asi")

        @given(v=st.integers(0, 100))
        def test_a(v, dtype):
            assume(v % 10 != 0)
            check_close(torch.ones(2, dtype=dtype) * v, torch.ones(2, dtype=dtype) * v,
                        tol=tolerance("kernel_methods_agree", dtype), claim="asi", what="a", context="")

        @pytest.mark.parametrize("i", range(4))
        def test_b(i, dtype):
            check_close(torch.ones(2, dtype=dtype), torch.ones(2, dtype=dtype) * (1 + 1e-14 * i),
                        tol=tolerance("kernel_methods_agree", dtype), claim="asi", what=f"b{i}", context="")
        """)
    )
    out = tmp_path / "records.json"
    result = _pytest(tmp_path, "-q", "-n", "2", "--ntkcheck-profile=ci", f"--ntkcheck-claims-json={out}")
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(out.read_text())
    ex = data["examples"]["asi"]
    assert ex["tests"] == 5 and len(ex["nodeids"]) == 5
    assert ex["examples"] == 25 + 4  # the ci profile's 25 valid examples, one per parametrised case
    assert ex["discarded"] > 0
    rec = data["records"]["asi"]
    assert rec["checks"] == 29 and rec["failures"] == 0
    assert rec["worst_what"] == "b3" and rec["tolerance_name"] == "kernel_methods_agree"


def test_a_test_discarding_more_than_the_limit_fails(tmp_path: Path):
    (tmp_path / "test_discards.py").write_text(
        textwrap.dedent("""\
        from hypothesis import assume, given, strategies as st

        @given(v=st.integers(0, 9))
        def test_narrow(v):
            assume(v < 7)
        """)
    )
    result = _pytest(tmp_path, "-q", "--ntkcheck-profile=ci", "--ntkcheck-max-discard=0.1")
    assert result.returncode == 1, result.stdout
    assert "draws" in result.stdout and "> --ntkcheck-max-discard 10%" in result.stdout
    assert _pytest(tmp_path, "-q", "--ntkcheck-profile=ci", "--ntkcheck-max-discard=0.5").returncode == 0


def test_unknown_mutant_is_a_usage_error(tmp_path: Path):
    (tmp_path / "test_nothing.py").write_text("def test_x():\n    pass\n")
    result = _pytest(tmp_path, "-q", "--ntkcheck-mutant=no_such_mutant")
    assert result.returncode == 4
    assert "mutant must be one of" in result.stderr


def test_every_mutant_of_the_catalogue_resolves_and_replaces_its_target():
    code = textwrap.dedent("""\
        from ntkcheck.testing import mutants
        names = sorted(mutants.catalogue())
        assert len(names) >= 20, names
        for name in names:
            m = mutants.catalogue()[name]
            before = mutants._resolve(m.target)[2]
            mutants.apply(name)
            after = mutants._resolve(m.target)[2]
            assert after is not before, name
        print(len(names))
        """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
