import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from fabricd.lab.lxd_preseed import DEFAULT_PRESEED, check_preseed, load_preseed


def bridge(**config: str) -> dict[str, object]:
    return {"networks": [{"name": "br0", "type": "bridge", "config": config}]}


def test_default_preseed_has_no_networks_and_pins_image_updates_off() -> None:
    preseed = load_preseed(None, "default")
    assert "networks" not in preseed
    assert preseed["config"]["images.auto_update_interval"] == "0"
    assert preseed["storage_pools"] == DEFAULT_PRESEED["storage_pools"]


def test_explicit_addresses_pass() -> None:
    assert check_preseed(bridge(**{"ipv4.address": "10.1.0.1/24", "ipv6.address": "none"}), "p") == []


@pytest.mark.parametrize(
    ("config", "bad_key"),
    [
        ({"ipv4.address": "auto", "ipv6.address": "none"}, "ipv4.address"),
        ({"ipv4.address": "10.1.0.1/24"}, "ipv6.address"),
        ({"ipv6.address": "fd00::1/64"}, "ipv4.address"),
        ({"ipv4.address": "10.1.0.1/24", "ipv6.address": "auto"}, "ipv6.address"),
    ],
)
def test_auto_or_missing_bridge_address_is_refused(config: dict[str, str], bad_key: str) -> None:
    problems = check_preseed(bridge(**config), "h1/preseed.yaml")
    assert len(problems) == 1
    assert f"networks[0].config.{bad_key}" in problems[0]
    assert problems[0].startswith("h1/preseed.yaml")


def test_wildcard_https_address_is_refused() -> None:
    problems = check_preseed({"config": {"core.https_address": ":8443"}}, "p")
    assert problems and "core.https_address" in problems[0]


def test_load_preseed_raises_with_every_problem() -> None:
    text = yaml.safe_dump({"networks": [{"name": "a", "config": {}}, {"name": "b", "config": {}}]})
    with pytest.raises(ValueError) as err:
        load_preseed(text, "p.yaml")
    assert str(err.value).count("\n") == 3  # four problems: two keys on two networks


@given(
    st.lists(
        st.fixed_dictionaries(
            {
                "ipv4.address": st.sampled_from(["auto", "", "none", "10.0.0.1/24"]),
                "ipv6.address": st.sampled_from(["auto", "", "none", "fd00::1/64"]),
            }
        ),
        max_size=4,
    )
)
def test_every_auto_address_is_reported(configs: list[dict[str, str]]) -> None:
    preseed = {"networks": [{"name": f"n{i}", "type": "bridge", "config": c} for i, c in enumerate(configs)]}
    expected = sum(1 for c in configs for v in c.values() if v in ("auto", ""))
    assert len(check_preseed(preseed, "p")) == expected
