"""How every console command ends: user errors, closed pipes, Ctrl-C and internal errors."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys

import pytest

from restorekit.cli.entry import EXIT_BROKEN_PIPE, EXIT_INTERNAL_ERROR, EXIT_USER_ERROR, run
from restorekit.errors import InputError

PARSER = argparse.ArgumentParser(prog="restore-test")


@pytest.mark.parametrize(
    "argv, codes",
    [
        (["-m", "restorekit.cli.export", "--list"], {EXIT_BROKEN_PIPE}),
        # argparse drops a help text it cannot write (and exits 0) on some Python releases and
        # raises BrokenPipeError on others: quiet either way
        (["-m", "restorekit.cli.export", "--help"], {0, EXIT_BROKEN_PIPE}),
        (["-m", "restorekit.cli.inspect", "--help"], {0, EXIT_BROKEN_PIPE}),
    ],
)
def test_output_into_a_closed_pipe_ends_quietly(argv, codes):
    """``restore-export --list | head``: the reader is gone before the command writes."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, *argv], stdout=write_end, stderr=subprocess.PIPE, text=True,
            timeout=120,
        )  # fmt: skip
    finally:
        os.close(write_end)
    assert proc.returncode in codes, proc.stderr
    assert proc.stderr == ""


def test_user_error_is_one_line_and_exit_2(capsys):
    def command(args):
        raise InputError("no such photo: x.png")

    assert run(PARSER, [], command) == EXIT_USER_ERROR
    assert capsys.readouterr().err == "error: no such photo: x.png\n"


def test_internal_error_is_one_line_without_traceback(capsys, monkeypatch):
    monkeypatch.delenv("RESTOREKIT_TRACEBACK", raising=False)

    def command(args):
        raise ValueError("inconsistent plan\nmore detail")

    assert run(PARSER, [], command) == EXIT_INTERNAL_ERROR
    err = capsys.readouterr().err
    assert err.startswith("error: internal error in restore-test: ValueError: inconsistent plan\n")
    assert "Traceback" not in err and "report" in err and err.count("\n") == 2
    monkeypatch.setenv("RESTOREKIT_TRACEBACK", "1")
    assert run(PARSER, [], command) == EXIT_INTERNAL_ERROR
    assert "Traceback" in capsys.readouterr().err


def test_interrupt_and_usage_errors(capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    assert run(PARSER, [], interrupted) == 130
    assert capsys.readouterr().err == "interrupted\n"
    with pytest.raises(SystemExit) as info:  # argparse's own usage errors keep exit status 2
        run(PARSER, ["--no-such-flag"], lambda args: 0)
    assert info.value.code == 2
