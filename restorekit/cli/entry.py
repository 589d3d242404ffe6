"""What every console command shares: mapping library errors to a one-line message and an exit code,
and argument parsers for values several commands take (tile shapes)."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from collections.abc import Callable

from restorekit.errors import RestoreKitError

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 3
EXIT_BROKEN_PIPE = 141


def run(
    parser: argparse.ArgumentParser,
    argv: list[str] | None,
    command: Callable[[argparse.Namespace], int | None],
) -> int:
    """Parse ``argv`` and run ``command`` with the arguments, the way every console command ends.

    - A :class:`RestoreKitError` (a user's mistake or a refused input) prints ``error: <message>``
      and exits 2.
    - Output piped into a program that stops reading (``| head``, ``| less`` then ``q``) ends
      quietly with 141, as Unix tools do (128 + SIGPIPE).
    - Ctrl-C prints ``interrupted`` and exits 130.
    - Anything else is a bug in restorekit: one line saying what failed and how to report it,
      exit 3; ``RESTOREKIT_TRACEBACK=1`` prints the traceback too.
    """
    warnings.filterwarnings("ignore", message=".*Failed to initialize NumPy.*")
    try:
        return command(parser.parse_args(argv)) or 0
    except RestoreKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("RESTOREKIT_TRACEBACK"):
            traceback.print_exc()
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        print(
            f"error: internal error in {parser.prog}: {type(exc).__name__}: {detail}\n"
            "This is a bug in restorekit, not in your input: please report it with the command "
            "you ran (RESTOREKIT_TRACEBACK=1 prints the details).",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush finds no closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout is not a real file (a test's capture)
        pass


def tile_shape(text: str) -> tuple[int, int]:
    """argparse type: ``256`` -> (256, 256); ``256x320`` -> (256, 320)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected a tile like 256 or 256x320, got {text!r}")
    return values[0], values[1]


def positive_float(unit: str) -> Callable[[str], float]:
    """argparse type for a quantity > 0 in ``unit`` (e.g. --workspace in GiB)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = 0.0
        if not value > 0:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"expected a positive number of {unit}, got {text!r}")
        return value

    return parse


def tcp_port(text: str) -> int:
    """argparse type for a TCP port such as --port or --rtsp-serve."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"expected a TCP port 1..65535, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """argparse type for counts such as --batch."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value
