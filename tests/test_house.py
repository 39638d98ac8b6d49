"""The house's size rule, which no linter checks: no Python file of the repository over 400 lines.

(ruff enforces the function limits, McCabe 15 and 60 statements; import-linter the layers; mypy the types.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("ntkcheck", "tests", "benchmarks", "crosscheck", "docs")
MAX_LINES = 400


def _python_files() -> list[Path]:
    files = [ROOT / "tasks.py"]
    for folder in FOLDERS:
        files += sorted((ROOT / folder).rglob("*.py"))
    return [f for f in files if f.is_file()]


def test_the_repository_has_python_files_to_check():
    assert len(_python_files()) > 100


@pytest.mark.parametrize("folder", FOLDERS)
def test_no_python_file_is_over_the_line_limit(folder: str):
    long = {
        str(f.relative_to(ROOT)): n
        for f in _python_files()
        if f.relative_to(ROOT).parts[0] == folder and (n := len(f.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"files over {MAX_LINES} lines: {long}"
