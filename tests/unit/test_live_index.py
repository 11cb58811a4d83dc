"""The live index's nesting answer against a plain scan of what it holds, through adds and removals."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabricd.routes.conflicts import LiveIndex
from fabricd.routes.model import IPNetwork


def _prefix(version: int, block: int, length: int) -> IPNetwork:
    """The `block`th prefix of `length` (IPv6: 96 longer) in a window of 10.0.0.0/16 or fd00::/112."""
    width, base = (32, 0x0A000000) if version == 4 else (128, 0xFD00 << 112)
    length += 0 if version == 4 else 96
    size = 1 << (width - length)
    kind = IPv4Network if version == 4 else IPv6Network
    return kind((base + block * size % (1 << (width - 16)), length))


# Few blocks and lengths down to host routes: most prefixes nest in or around others, and edges meet.
prefixes = st.builds(
    _prefix, st.sampled_from((4, 6)), st.integers(0, 15), st.sampled_from((20, 24, 28, 30, 31, 32))
)
steps = st.lists(st.tuples(st.booleans(), prefixes), max_size=80)


def _plain_nesting(held: set[IPNetwork], prefix: IPNetwork) -> set[IPNetwork]:
    return {
        other
        for other in held
        if other.version == prefix.version
        and other != prefix
        and (other.subnet_of(prefix) or other.supernet_of(prefix))  # type: ignore[arg-type]
    }


@pytest.mark.parametrize("edit_bound", [0, 3, LiveIndex.EDIT_BOUND])
@settings(max_examples=150, deadline=None)
@given(steps=steps, asked=st.lists(prefixes, min_size=1, max_size=10))
def test_nesting_equals_a_plain_scan(
    edit_bound: int, steps: list[tuple[bool, IPNetwork]], asked: list[IPNetwork]
) -> None:
    saved, LiveIndex.EDIT_BOUND = LiveIndex.EDIT_BOUND, edit_bound
    try:
        index, held = LiveIndex(), set()
        for add, prefix in steps:
            if add:
                index.add(prefix)
                held.add(prefix)
            else:
                index.discard(prefix)
                held.discard(prefix)
            if prefix.prefixlen % 5 == 0:  # a new pass now and then
                index.begin()
            for probe in (prefix, *asked):
                found = index.nesting(probe)
                assert len(found) == len(set(found)), found
                assert set(found) == _plain_nesting(held, probe), (probe, sorted(map(str, held)))
    finally:
        LiveIndex.EDIT_BOUND = saved
