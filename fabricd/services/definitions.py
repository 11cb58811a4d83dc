"""Which services are in force: fabricd's config, plus those instances define with their keys.

Decided from the whole snapshot (every member's instances), so every host reaches the same answer:
- a service in the config is always in force; an instance may join it (`user.fabric.anycast.S=true`
  with `backends.key: true`) but not redefine it: an instance that tries is refused for it;
- a service defined on instances is in force when every instance defining it is in one project and
  gives the same definition; otherwise every one of them is refused (no instance's version wins
  by accident of order);
- an address belongs to one service: an instance-defined service claiming a config service's
  address, or one claimed by another instance-defined service, is refused whole.
Per-instance key problems refuse that instance for that service only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from fabricd.config.model import ServiceConfig
from fabricd.lxd.records import InstanceRecord
from fabricd.services.instance_keys import PREFIX, InstanceAnycast, read_instance
from fabricd.services.model import Service, ServiceProblem

InstanceKey = tuple[str, str]  # (project, name)
ALL_SERVICES = "*"  # InstanceAnycast.refused key for an instance refused for every service
_SHOWN_NAMES = 8


@dataclass(frozen=True, slots=True)
class Definitions:
    services: tuple[Service, ...]  # by name
    problems: tuple[ServiceProblem, ...]
    anycast: Mapping[InstanceKey, InstanceAnycast]  # only instances with anycast keys
    # (service, project, instance) -> why that instance may not back that service
    refused: Mapping[tuple[str, str, str], str]

    def refusal(self, service: str, project: str, instance: str) -> str | None:
        return self.refused.get((service, project, instance)) or self.refused.get(
            (ALL_SERVICES, project, instance)
        )


def resolve_services(configured: Sequence[ServiceConfig], instances: Iterable[InstanceRecord]) -> Definitions:
    anycast: dict[InstanceKey, InstanceAnycast] = {}
    for instance in sorted(instances, key=lambda i: (i.project, i.name)):
        if any(key.startswith(PREFIX) for key in instance.config):
            anycast[(instance.project, instance.name)] = read_instance(instance.project, instance.config)
    refused: dict[tuple[str, str, str], str] = {}
    for (project, name), keys in anycast.items():
        for service, reason in keys.refused.items():
            refused[(service, project, name)] = reason
    config_names = {service.name for service in configured}
    candidates: list[Service] = []
    for name, definers in sorted(_definers(anycast).items()):
        problem = _definition_problem(name, definers, config_names)
        if problem is not None:
            for project, definer, _ in definers:
                refused[(name, project, definer)] = problem
        else:
            candidates.append(Service(definers[0][2], "instances"))
    problems = [ServiceProblem(s, p, i, r) for (s, p, i), r in refused.items()]
    accepted, service_problems = _address_owners(configured, candidates)
    services = sorted([*(Service(c) for c in configured), *accepted], key=lambda s: s.name)
    return Definitions(tuple(services), tuple(sorted(problems + service_problems)), anycast, refused)


Definer = tuple[str, str, ServiceConfig]  # project, instance, its definition


def _definers(anycast: Mapping[InstanceKey, InstanceAnycast]) -> dict[str, list[Definer]]:
    found: dict[str, list[Definer]] = {}
    for (project, name), keys in anycast.items():
        for service, definition in keys.defines.items():
            found.setdefault(service, []).append((project, name, definition))
    return found


def _definition_problem(name: str, definers: list[Definer], config_names: set[str]) -> str | None:
    if name in config_names:
        join = f"{PREFIX}{name}=true"
        return f"service {name} is defined in fabricd's config; an instance may only join it ({join})"
    projects = sorted({project for project, _, _ in definers})
    if len(projects) > 1:
        return f"service {name} is defined in more than one project ({', '.join(projects)})"
    versions: dict[ServiceConfig, list[str]] = {}
    for _, instance, definition in definers:
        versions.setdefault(definition, []).append(instance)
    if len(versions) > 1:
        groups = " | ".join(_names(group) for group in sorted(versions.values()))
        return f"the instances defining service {name} disagree on it: {groups}"
    return None


def _names(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN_NAMES])
    return shown + (f" and {len(names) - _SHOWN_NAMES} more" if len(names) > _SHOWN_NAMES else "")


def _address_owners(
    configured: Sequence[ServiceConfig], candidates: list[Service]
) -> tuple[list[Service], list[ServiceProblem]]:
    owners = {address: service.name for service in configured for address in service.addresses}
    claims: dict[object, list[str]] = {}
    for service in candidates:
        for address in service.config.addresses:
            claims.setdefault(address, []).append(service.name)
    accepted: list[Service] = []
    problems: list[ServiceProblem] = []
    for service in candidates:
        reason = None
        for address in service.config.addresses:
            if address in owners:
                reason = f"address {address} belongs to service {owners[address]} (config)"
            elif len(claims[address]) > 1:
                others = [n for n in claims[address] if n != service.name]
                reason = f"address {address} is also claimed by service {', '.join(others)}"
            if reason:
                break
        if reason is None:
            accepted.append(service)
        else:
            problems.append(ServiceProblem(service.name, service.project, "", reason))
    return accepted, problems
