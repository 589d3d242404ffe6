"""What every console command shares: mapping library errors to a one-line message and an exit code,
and argument parsers for values several commands take (tile shapes)."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable

from restorekit.errors import RestoreKitError

EXIT_USER_ERROR = 2


def run(command: Callable[[], int | None]) -> int:
    """Run ``command``; a :class:`RestoreKitError` prints ``error: <message>`` and exits 2.

    Anything else is a bug and keeps its traceback.
    """
    warnings.filterwarnings("ignore", message=".*Failed to initialize NumPy.*")
    try:
        return command() or 0
    except RestoreKitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


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


def positive_int(text: str) -> int:
    """argparse type for counts such as --batch."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value
