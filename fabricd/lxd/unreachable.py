"""Instances on a member LXD cannot reach: keep what was known of them.

While a cluster member is unreachable (cut off, not yet or already marked offline), LXD lists its
instances as stubs: status "Error", no devices, no state (seen in the overlay lab with
`/1.0/instances?recursion=2`). Taken at face value, a full resync then drops their NICs, so the
DHCP/DNS authority dropped their reservations and names, and NAKed their renewals once the member
came back (lab). A stub whose instance was known before, on the same member, keeps the NICs and
user config it had, with the stub's status. Pure.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping

from fabricd.lxd.records import InstanceRecord

UNREACHABLE_STATUS = "Error"


def is_stub(instance: InstanceRecord) -> bool:
    """What LXD lists for an instance on a member it cannot reach."""
    return instance.status == UNREACHABLE_STATUS and not instance.nics


def keep_unreachable(
    previous: Mapping[tuple[str, str], InstanceRecord], fresh: Iterable[InstanceRecord]
) -> tuple[InstanceRecord, ...]:
    """`fresh`, with every stub that was known on the same member filled in from `previous`."""
    kept = []
    for instance in fresh:
        before = previous.get((instance.project, instance.name))
        if is_stub(instance) and before is not None and before.location == instance.location:
            instance = dataclasses.replace(instance, nics=before.nics, config=before.config)
        kept.append(instance)
    return tuple(kept)
