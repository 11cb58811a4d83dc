"""Teardown: `down` and a failed `up` leave no namespace, link, process or cgroup behind.

Kept apart from the other lab modules so no other lab is up while the machine-wide checks run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric_lab import netns
from tests.lab.conftest import REPO, assert_nothing_left, lab_from

pytestmark = pytest.mark.lab


def test_up_failure_tears_down_everything(lab_host: None, state_root: Path, tmp_path: Path) -> None:
    topo = tmp_path / "broken.clab.yml"
    topo.write_text(
        "name: tbroken\n"
        "topology:\n"
        "  nodes:\n"
        "    a: {kind: linux, image: alpine, exec: ['ip link set eth1 up', 'false']}\n"
        "    b: {kind: linux, image: alpine}\n"
        "  links:\n"
        "    - endpoints: ['a:eth1', 'b:eth1']\n"
    )
    lab = lab_from(topo, "tbroken", state_root)
    with pytest.raises(Exception, match="false"):
        lab.up()
    assert_nothing_left(lab, [])


def test_down_leaves_nothing_and_is_safe_twice(lab_host: None, state_root: Path) -> None:
    lab = lab_from(REPO / "labs" / "basic.clab.yml", "tdown", state_root)
    links_before = netns.link_names()
    state = lab.up()
    recorded: list[int] = []
    for node in state.nodes.values():
        recorded += [p for p in (node.holder_pid, node.lxd_pid, node.agent_pid) if p]
        recorded += [int(Path(f).read_text().split()[0]) for f in node.pid_files if Path(f).exists()]
    assert len(recorded) >= 3 + 2 + 2 + 4  # holders, LXD, agents, FRR daemons
    assert all(netns.alive(p) for p in recorded)
    lab.down()
    assert_nothing_left(lab, recorded, ran_lxd=True)
    assert netns.link_names() == links_before
    assert lab.down() == []  # second run: nothing to do, no error
