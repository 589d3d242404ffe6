"""The outputs ledger: an item is done only when its input is unchanged and its output still has
the recorded size and sha256; a line cut short by a crash is ignored. (No Ray needed.)"""

from __future__ import annotations

import hashlib
import os

from restorekit.cluster.ledger import (
    LEDGER_NAME,
    InputIdentity,
    Ledger,
    LedgerEntry,
    job_fingerprint,
)


def _finished(tmp_path, job="job1"):
    source = tmp_path / "in.png"
    source.write_bytes(b"input bytes")
    out = tmp_path / "out"
    out.mkdir()
    target = out / "in.png"
    target.write_bytes(b"restored bytes")
    digest = hashlib.sha256(b"restored bytes").hexdigest()  # computed here, not by the ledger
    entry = LedgerEntry(job, InputIdentity.of(source), "in.png", 14, digest, 0.5, "h:1", "a.onnx")
    with Ledger(out) as ledger:
        ledger.append(entry)
    return source, target, Ledger(out)


def test_complete_output_is_done_and_survives_a_torn_last_line(tmp_path):
    source, target, ledger = _finished(tmp_path)
    with open(ledger.path, "a") as fh:
        fh.write('{"job": "job1", "input": {"pa')  # a crash in the middle of a line
    entries = ledger.read()
    entry = entries[("job1", str(source.resolve()))]
    assert ledger.is_done(entry, InputIdentity.of(source), target)
    assert ledger.path.name == LEDGER_NAME and len(entries) == 1


def test_truncated_or_altered_output_is_not_done(tmp_path):
    source, target, ledger = _finished(tmp_path)
    entry = ledger.read()[("job1", str(source.resolve()))]
    target.write_bytes(b"restored")  # truncated
    assert not ledger.is_done(entry, InputIdentity.of(source), target)
    target.write_bytes(b"restored bytez")  # same size, other content: only the hash tells
    assert not ledger.is_done(entry, InputIdentity.of(source), target)
    target.unlink()
    assert not ledger.is_done(entry, InputIdentity.of(source), target)


def test_changed_input_or_other_target_is_not_done(tmp_path):
    source, target, ledger = _finished(tmp_path)
    entry = ledger.read()[("job1", str(source.resolve()))]
    st = source.stat()
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: a new input
    assert not ledger.is_done(entry, InputIdentity.of(source), target)
    os.utime(source, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert ledger.is_done(entry, InputIdentity.of(source), target)
    assert not ledger.is_done(entry, InputIdentity.of(source), target.with_name("x.png"))
    assert not ledger.is_done(None, InputIdentity.of(source), target)


def test_job_fingerprint_follows_artifact_and_options(tmp_path):
    art = tmp_path / "a.onnx"
    art.write_bytes(b"model")
    base = job_fingerprint([art], {"tile": None})
    assert job_fingerprint([art], {"tile": None}) == base
    assert job_fingerprint([art], {"tile": [64, 64]}) != base
    art.write_bytes(b"another model")
    assert job_fingerprint([art], {"tile": None}) != base
