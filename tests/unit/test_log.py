import json
import subprocess
import sys

import pytest

from fabricd.log import wants_json


@pytest.mark.parametrize(
    ("fmt", "tty", "journal", "expected"),
    [
        ("auto", True, False, False),
        ("auto", False, False, True),
        ("auto", True, True, True),
        ("json", True, False, True),
        ("console", False, True, False),
    ],
)
def test_wants_json(fmt: str, tty: bool, journal: bool, expected: bool) -> None:
    assert wants_json(fmt, tty, journal) is expected  # type: ignore[arg-type]


def test_log_lines_are_json_when_piped() -> None:
    code = (
        "from fabricd.log import configure_logging, get_logger\n"
        "configure_logging('info', 'auto')\n"
        "get_logger('t').info('hello', peer='10.0.0.1')\n"
        "get_logger('t').debug('hidden')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["event"] == "hello" and record["peer"] == "10.0.0.1" and record["level"] == "info"
