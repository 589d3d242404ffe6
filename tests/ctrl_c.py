"""Start a subprocess that a test stops with Ctrl-C, whatever ignores SIGINT around the test run.

A shell that runs a command in the background without job control (``cmd &`` in a script, some CI
runners) starts it with SIGINT ignored, every child inherits that across exec, and Python then
installs no KeyboardInterrupt handler: a test's Ctrl-C would never arrive. Setting Python's own
handler in this process for the moment of the fork gives the child the default disposition back.
"""

from __future__ import annotations

import signal
import subprocess
from typing import Any


def popen_for_ctrl_c(args: list[str], **kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen(args, **kwargs)`` with SIGINT at its default in the child."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(args, **kwargs)
    finally:
        signal.signal(signal.SIGINT, previous)
