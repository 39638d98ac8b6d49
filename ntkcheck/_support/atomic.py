"""All-or-nothing report writing: an interrupted command leaves the previous report whole.

A report is a Markdown file plus the figures it links.  :func:`staged` hands out
temporary paths in the destination folder (same file system, so ``os.replace``
is atomic); when the block finishes, the figures are renamed into place first and
the Markdown last, so the Markdown never links a figure that is not there.  If the
block raises (KeyboardInterrupt included), every temporary file is removed and
the previous files stay untouched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Staging:
    """Temporary paths for the files of one report; see :func:`staged`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._files: dict[Path, Path] = {}  # final path -> temporary path

    def path(self, name: str) -> Path:
        """The temporary path to write the file ``folder/name`` to (keeps the suffix, for savefig)."""
        final = self.folder / name
        if final.exists() and not final.is_file():
            raise IsADirectoryError(f"cannot write the report file {final}: a directory of that name exists")
        tmp = self.folder / f".{final.stem}.{os.getpid()}.tmp{final.suffix}"
        self._files[final] = tmp
        return tmp

    def write_text(self, name: str, text: str) -> Path:
        """Stage ``text`` as ``folder/name``; returns the final path."""
        self.path(name).write_text(text)
        return self.folder / name

    def _commit(self) -> None:
        order = sorted(self._files.items(), key=lambda item: item[0].suffix == ".md")  # Markdown last
        for final, tmp in order:
            if not tmp.exists():
                raise FileNotFoundError(f"report file {final.name} was staged but never written")
        for final, tmp in order:
            os.replace(tmp, final)

    def _discard(self) -> None:
        for tmp in self._files.values():
            tmp.unlink(missing_ok=True)


def check_out_folder(out: Path, name: str = "--out") -> Path:
    """Raise ``NotADirectoryError`` naming ``name`` when ``out`` exists and is not a folder."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{name} must be a folder, got the existing file {out}")
    return out


@contextmanager
def staged(folder: Path) -> Iterator[Staging]:
    """Stage a report's files in ``folder`` and put them in place together (Markdown last) on success."""
    folder = check_out_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Staging(folder)
    try:
        yield staging
        staging._commit()
    finally:
        staging._discard()
