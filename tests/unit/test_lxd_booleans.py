"""LXD's boolean rule (shared.IsTrue / shared.IsFalse), and the keys fabricd reads with it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabricd.config.model import RoutesConfig
from fabricd.lxd.booleans import lxd_bool
from fabricd.routes.attributes import ANNOUNCE_ADDRESSES, network_attributes
from tests.unit.lxd_strategies import announced, bridge, config, instance, nic, ovn, planned, snapshot, uplink

TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")


def _spelled(words: tuple[str, ...]) -> st.SearchStrategy[str]:
    """A word in any mix of cases, with white space around it."""
    blank = st.sampled_from(["", " ", "\t", "  \n"])
    cased = st.sampled_from(words).flatmap(
        lambda word: st.lists(st.booleans(), min_size=len(word), max_size=len(word)).map(
            lambda upper: "".join(c.upper() if u else c for c, u in zip(word, upper, strict=True))
        )
    )
    return st.tuples(blank, cased, blank).map("".join)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        *((w, True) for w in TRUE_WORDS),
        *((w, False) for w in FALSE_WORDS),
        ("TRUE", True), ("Off", False), (" on ", True),
        (None, None), ("", None), ("maybe", None), ("enabled", None), ("2", None), ("y", None),
        (True, None),  # not a string: LXD's config values always are
    ],
)  # fmt: skip
def test_lxd_bool(text: object, value: bool | None) -> None:
    assert lxd_bool(text) is value


@given(_spelled(TRUE_WORDS))
def test_true_words_in_any_case_are_true(text: str) -> None:
    assert lxd_bool(text) is True


@given(_spelled(FALSE_WORDS))
def test_false_words_in_any_case_are_false(text: str) -> None:
    assert lxd_bool(text) is False


@given(st.text(max_size=8))
def test_every_other_text_is_neither(text: str) -> None:
    if text.strip().lower() not in TRUE_WORDS + FALSE_WORDS:
        assert lxd_bool(text) is None


@given(_spelled(FALSE_WORDS))
def test_announce_addresses_off_is_read_as_false_not_refused(text: str) -> None:
    """ "off" in any case used to refuse the network's routes; LXD reads it as false."""
    read = network_attributes({ANNOUNCE_ADDRESSES: text}, RoutesConfig())
    assert read.announce_addresses is False and read.problem is None


@given(_spelled(TRUE_WORDS))
def test_announce_addresses_on_is_read_as_true(text: str) -> None:
    read = network_attributes({ANNOUNCE_ADDRESSES: text}, RoutesConfig())
    assert read.announce_addresses is True and read.problem is None


def test_a_bridge_with_announce_addresses_off_opts_out_without_a_refusal() -> None:
    off = bridge("br0", {ANNOUNCE_ADDRESSES: "off"})
    snap = snapshot(off, instance("c1", nic("br0", addresses=("10.0.3.9/24",))))
    plan = planned(snap, config("routes:\n  announce_instance_addresses: true\n"))
    assert announced(plan) == {} and plan.refused == ()


@given(_spelled(TRUE_WORDS + FALSE_WORDS))
def test_ovn_nat_is_read_as_lxd_reads_it(text: str) -> None:
    plan = planned(snapshot(uplink(), ovn(config={"ipv4.nat": text})))
    nat = lxd_bool(text)
    assert ("198.51.100.0/26" in announced(plan)) is (not nat)
