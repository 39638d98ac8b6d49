"""All-or-nothing report writing (ntkcheck._support.atomic)."""

from __future__ import annotations

import pytest

from ntkcheck._support.atomic import staged


def test_files_land_together_markdown_last(tmp_path, monkeypatch):
    import os

    order = []
    real = os.replace
    monkeypatch.setattr(os, "replace", lambda a, b: (order.append(os.path.basename(b)), real(a, b)))
    with staged(tmp_path) as st:
        st.write_text("r.md", "new")
        st.path("fig.png").write_bytes(b"png")
    assert order == ["fig.png", "r.md"]
    assert (tmp_path / "r.md").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png", "r.md"]


def test_interrupt_keeps_previous_report(tmp_path):
    (tmp_path / "r.md").write_text("old")
    (tmp_path / "fig.png").write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with staged(tmp_path) as st:
            st.path("fig.png").write_bytes(b"")  # a kill in the middle of savefig
            raise KeyboardInterrupt
    assert (tmp_path / "r.md").read_text() == "old"
    assert (tmp_path / "fig.png").read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png", "r.md"]


def test_out_that_is_a_file_is_refused(tmp_path):
    f = tmp_path / "report"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match="--out"):
        with staged(f):
            pass


def test_staged_but_unwritten_file_raises_and_keeps_previous(tmp_path):
    (tmp_path / "r.md").write_text("old")
    with pytest.raises(FileNotFoundError, match="fig.png"):
        with staged(tmp_path) as st:
            st.write_text("r.md", "new")
            st.path("fig.png")
    assert (tmp_path / "r.md").read_text() == "old"
