"""The drain file: what is drained and since when, kept across restarts, read strictly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fabricd.frozen import FrozenMap
from fabricd.services.drain_store import (
    DrainFileError,
    DrainStore,
    drained,
    parse_drain,
    render_drain,
    undrained,
)
from fabricd.services.model import DrainState

times = st.floats(min_value=0, max_value=4e9, allow_nan=False)
names = st.text(alphabet="abcdefghij-0123456789", min_size=1, max_size=12)
states = st.builds(
    DrainState,
    st.none() | times,
    st.dictionaries(names, times, max_size=5).map(FrozenMap),
)


@given(states)
def test_the_file_gives_back_what_was_written(state: DrainState) -> None:
    assert parse_drain(render_drain(state), Path("drain.json")) == state


def test_a_missing_file_is_nothing_drained_and_save_replaces_atomically(tmp_path: Path) -> None:
    store = DrainStore(tmp_path / "services")
    assert store.load() == DrainState()
    state = DrainState(100.0, FrozenMap({"dns": 50.0}))
    store.save(state)
    assert store.load() == state
    store.save(drained(state, "web", 200.0))
    assert store.load().services == {"dns": 50.0, "web": 200.0}
    assert sorted(os.listdir(tmp_path / "services")) == ["drain.json"]  # no staging file left


def test_drain_keeps_the_first_time_and_undrain_removes_only_what_was_named() -> None:
    state = drained(DrainState(), "dns", 10.0)
    assert drained(state, "dns", 20.0).since("dns") == 10.0
    host = drained(state, None, 30.0)
    assert (host.host, drained(host, None, 40.0).host) == (30.0, 30.0)
    assert host.since("dns") == 10.0 and host.since("web") == 30.0  # the earlier of the two
    assert undrained(host, "dns") == DrainState(30.0)
    assert undrained(host, None) == state
    assert undrained(state, "web") == state


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not JSON"),
        ("[]", "expected a JSON object"),
        ('{"host": "yesterday"}', "host: expected a unix time"),
        ('{"services": {"dns": true}}', "services.dns: expected a unix time"),
        ('{"services": []}', "services: expected an object"),
        ('{"hosts": 1}', "unknown key 'hosts'"),
    ],
)
def test_a_damaged_file_is_an_error_naming_the_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    store = DrainStore(tmp_path)
    store.path.write_text(text)
    with pytest.raises(DrainFileError, match=message) as caught:
        store.load()
    assert str(store.path) in str(caught.value)
