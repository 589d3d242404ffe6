"""The outputs ledger of a cluster job: which input became which output, with the output's size
and sha256, so a re-run skips only outputs that are complete and unchanged.

The ledger is a JSON-lines file in the output folder (``.restorekit-ledger.jsonl``), appended by
the driver alone, one line per finished item, flushed as it goes. An output is recorded only after
its worker renamed it into place, so a line never describes a half-written file; a line cut short
by a crash is ignored when the ledger is read back. An item is "done" when the ledger has a line for
the same job and the same input (path, size, modification time), and the output file still has
the recorded size and sha256: a truncated or edited output is computed again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from restorekit.files import file_sha256

LEDGER_NAME = ".restorekit-ledger.jsonl"


@dataclass(frozen=True)
class InputIdentity:
    """An input file as it was when restored: a changed size or mtime means a new input."""

    path: str  # absolute
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: str | Path) -> InputIdentity:
        """The identity of ``path`` now.

        Raises:
            OSError: the file cannot be stat'ed.
        """
        resolved = Path(path).resolve()
        st = resolved.stat()
        return cls(str(resolved), st.st_size, st.st_mtime_ns)


@dataclass(frozen=True)
class LedgerEntry:
    """One finished item: its input, its output (relative to the output folder) and who made it."""

    job: str
    input: InputIdentity
    output: str
    output_size: int
    output_sha256: str
    megapixels: float
    worker: str = ""
    artifact: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LedgerEntry:
        return cls(**{**data, "input": InputIdentity(**data["input"])})


def job_fingerprint(artifacts: Iterable[str | Path], options: dict[str, Any]) -> str:
    """A short key for "the same job": the artifacts (name, size, mtime) and the options that
    change the output (tile, overlap, batch). Outputs of another model or tiling are not reused."""
    parts = []
    for path in artifacts:
        st = Path(path).stat()
        parts.append([Path(path).name, st.st_size, st.st_mtime_ns])
    text = json.dumps({"artifacts": parts, "options": options}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Ledger:
    """The ledger file of one output folder; open it as a context manager to append.

    Args:
        folder: the job's output folder.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LEDGER_NAME
        self._fh: IO[str] | None = None

    def read(self) -> dict[tuple[str, str], LedgerEntry]:
        """The last entry per (job, input path); unreadable lines (a crash mid-line) are skipped."""
        entries: dict[tuple[str, str], LedgerEntry] = {}
        if not self.path.is_file():
            return entries
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                try:
                    entry = LedgerEntry.from_dict(json.loads(line))
                except (ValueError, TypeError, KeyError):
                    continue
                entries[(entry.job, entry.input.path)] = entry
        return entries

    def is_done(self, entry: LedgerEntry | None, identity: InputIdentity, target: Path) -> bool:
        """Whether ``target`` is the complete output the ledger recorded for this very input."""
        if entry is None or entry.input != identity:
            return False
        if (self.folder / entry.output).resolve() != target.resolve():
            return False
        try:
            if target.stat().st_size != entry.output_size:
                return False  # cheap check first: a truncated file never needs hashing
            return file_sha256(target) == entry.output_sha256
        except OSError:
            return False

    def __enter__(self) -> Ledger:
        self.folder.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        return self

    def append(self, entry: LedgerEntry) -> None:
        """Record one finished item (written through at once: a crash loses at most this line)."""
        assert self._fh is not None, "append inside the with-block"
        self._fh.write(entry.to_json() + "\n")
        self._fh.flush()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fh is not None:
            try:
                os.fsync(self._fh.fileno())
            finally:
                self._fh.close()
                self._fh = None


def output_record(path: str | Path) -> tuple[int, str]:
    """(size, sha256) of a finished output file."""
    return Path(path).stat().st_size, file_sha256(path)


__all__ = [
    "LEDGER_NAME",
    "InputIdentity",
    "Ledger",
    "LedgerEntry",
    "job_fingerprint",
    "output_record",
]
