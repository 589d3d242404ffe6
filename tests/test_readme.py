"""The README's set-up commands are the ones CI runs."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Set up and run.*?```bash\n(.*?)```", text, re.S)
    assert block, "README.md must open with a 'Set up and run' bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_readme_starts_with_two_commands_install_and_test():
    install, test = _readme_commands()
    assert "pip install" in install and "restore-export" in install
    assert "pytest" in test


def test_ci_runs_the_readme_install_and_test_commands():
    install, test = _readme_commands()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    # CI runs the install part of the first command (not the export itself) and the test command.
    setup = install.split(" && restore-export")[0]
    assert setup in ci
    assert test in ci
