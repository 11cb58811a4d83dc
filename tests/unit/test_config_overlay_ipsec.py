"""overlay.ipsec: off by default, a key file required when on, and the key never read at load."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabricd.config import load_config, load_config_text
from fabricd.config.model import OverlayConfig, OverlayIPsecConfig
from tests.unit.test_config import EXAMPLE, HOST, assert_problem, config, problems


def test_off_by_default() -> None:
    assert load_config_text(HOST).overlay.ipsec == OverlayIPsecConfig(False, None)
    assert load_config_text(config("overlay: {ipsec: {}}\n")).overlay.ipsec == OverlayIPsecConfig()
    assert load_config_text(config("overlay:\n  ipsec:\n")).overlay.ipsec == OverlayIPsecConfig()


def test_positional_construction_of_the_older_fields_still_works() -> None:
    overlay = OverlayConfig(True, "fabric0", 100, 4789, None, ())
    assert overlay.ipsec == OverlayIPsecConfig()


def test_enabled_with_key_file() -> None:
    cfg = load_config_text(
        config(
            """\
            overlay:
              enabled: true
              ipsec:
                enabled: true
                key_file: /etc/fabricd/overlay-ipsec.key
            """
        )
    )
    assert cfg.overlay.ipsec == OverlayIPsecConfig(True, Path("/etc/fabricd/overlay-ipsec.key"))


def test_key_file_is_not_read_at_load(tmp_path: Path) -> None:
    missing = tmp_path / "no-such.key"
    cfg = load_config_text(config(f"overlay:\n  ipsec: {{enabled: true, key_file: {missing}}}\n"))
    assert cfg.overlay.ipsec.key_file == missing
    assert not missing.exists()


def test_key_file_without_enabled_is_kept() -> None:
    cfg = load_config_text(config("overlay:\n  ipsec: {key_file: /k}\n"))
    assert cfg.overlay.ipsec == OverlayIPsecConfig(False, Path("/k"))


def test_example_has_ipsec_off() -> None:
    assert load_config(EXAMPLE).overlay.ipsec == OverlayIPsecConfig()
    text = EXAMPLE.read_text()
    assert "  ipsec:\n" in text and "# key_file: /etc/fabricd/" in text


CASES = [
    (
        HOST + "overlay:\n  ipsec:\n    enabled: true\n",
        "overlay.ipsec.key_file",
        6,
        "missing required key 'key_file' (required when overlay.ipsec.enabled is true)",
    ),
    (
        HOST + "overlay:\n  ipsec:\n    enabled: true\n    key_file:\n",
        "overlay.ipsec.key_file",
        7,
        "a value is required (required when overlay.ipsec.enabled is true)",
    ),
    (
        HOST + "overlay:\n  ipsec:\n    enabled: true\n    key_file: keys/overlay.key\n",
        "overlay.ipsec.key_file",
        7,
        "expected an absolute path, got 'keys/overlay.key'",
    ),
    (HOST + "overlay:\n  ipsec:\n    enabled: yes please\n", "overlay.ipsec.enabled", 6, "true or false"),
    (HOST + "overlay:\n  ipsec: true\n", "overlay.ipsec", 5, "expected a mapping, got true"),
    (
        HOST + "overlay:\n  ipsec:\n    key: /k\n",
        "overlay.ipsec.key",
        6,
        "unknown key 'key'; expected one of: enabled, key_file",
    ),
]


@pytest.mark.parametrize(
    ("text", "key_path", "line", "message"), CASES, ids=[str(i) for i in range(len(CASES))]
)
def test_bad_value(text: str, key_path: str, line: int, message: str) -> None:
    assert_problem(text, key_path, line, message)


def test_error_str_is_file_line_key_message() -> None:
    (problem,) = problems(HOST + "overlay:\n  vni: 7\n  ipsec:\n    enabled: true\n")
    assert str(problem) == (
        "test.yaml:7: overlay.ipsec.key_file: "
        "missing required key 'key_file' (required when overlay.ipsec.enabled is true)"
    )


def test_ipsec_problem_is_reported_with_other_overlay_problems() -> None:
    found = problems(HOST + "overlay:\n  vni: 0\n  ipsec: {enabled: true}\n")
    assert [(p.key_path, p.line) for p in found] == [("overlay.vni", 5), ("overlay.ipsec.key_file", 6)]
