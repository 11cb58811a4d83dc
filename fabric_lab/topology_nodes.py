"""Containerlab's node rules: kinds, node-config keys, binds, and merging defaults, kinds and groups."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from fabric_lab.topology_document import Report, YamlValue
from fabric_lab.topology_fields import FieldChecker, did_you_mean
from fabric_lab.topology_model import FALSE_WORDS, TRUE_WORDS, Bind, Node, name_problem, parse_bind
from fabricd.yaml_lines import key_path

CONTAINERLAB_KINDS: Final = frozenset(
    {
        "srl", "nokia_srlinux", "ceos", "arista_ceos", "crpd", "juniper_crpd", "sonic-vs", "sonic-vm",
        "vr-sros", "nokia_sros", "vr-nokia_sros", "vr-vmx", "vr-juniper_vmx", "juniper_vmx", "vr-vqfx",
        "juniper_vqfx", "vr-vsrx", "juniper_vsrx", "juniper_vjunosrouter", "juniper_vjunosswitch",
        "juniper_vjunosevolved", "vr-xrv", "cisco_xrv", "vr-xrv9k", "cisco_xrv9k", "vr-veos",
        "arista_veos", "vr-csr", "cisco_csr1000v", "vr-pan", "paloalto_panos", "vr-ros", "mikrotik_ros",
        "vr-n9kv", "cisco_n9kv", "cisco_ftdv", "dell_ftosv", "dell_sonic", "vr-aoscx", "aruba_aoscx",
        "linux", "bridge", "ovs-bridge", "border0", "host", "keysight_ixia-c-one", "ipinfusion_ocnos",
        "checkpoint_cloudguard", "ext-container", "xrd", "rare", "cisco_xrd", "c8000", "cisco_c8000",
        "cisco_c8000v", "cisco_cat9kv", "cisco_iol", "cvx", "cumulus_cvx", "openbsd", "freebsd",
        "generic_vm", "fortinet_fortigate", "k8s-kind",
    }
)  # fmt: skip
# Our runner's extension: an FRR router without containerlab's linux + image convention.
RUNNER_KINDS: Final = CONTAINERLAB_KINDS | {"frr"}
FRR_KIND_MESSAGE: Final = "'frr' is not a containerlab kind; use kind: linux with an frrouting/frr image"
# Kinds that are not containers, so they have no management eth0 to protect.
NON_CONTAINER_KINDS: Final = frozenset({"bridge", "ovs-bridge", "host"})

NODE_CONFIG_KEYS: Final = (
    "image", "image-pull-policy", "kind", "license", "type", "group", "startup-config", "startup-delay",
    "enforce-startup-config", "suppress-startup-config", "auto-remove", "restart-policy", "exec", "binds",
    "ports", "env", "env-files", "user", "entrypoint", "cmd", "publish", "labels", "runtime", "mgmt-ipv4",
    "mgmt-ipv6", "network-mode", "cpu", "memory", "cpu-set", "sandbox", "kernel", "extras", "config",
    "stages", "dns", "certificate", "healthcheck", "wait-for", "aliases", "devices", "cap-add", "shm-size",
    "sysctls", "components",
)  # fmt: skip
OTHER_STRING_KEYS: Final = ("cmd", "entrypoint", "type", "mgmt-ipv4", "mgmt-ipv6")
OTHER_STRING_LIST_KEYS: Final = ("ports", "publish", "wait-for", "env-files")
INTEGER_KEYS: Final = ("startup-delay", "cpu")
BOOLEAN_KEYS: Final = ("enforce-startup-config", "suppress-startup-config", "auto-remove")


@dataclass(slots=True)
class Section:
    """A node-config (node, group, kind or defaults) after type checks; bad values are left unset."""

    kind: str | None = None
    group: str | None = None
    image: str | None = None
    exec: tuple[str, ...] | None = None
    binds: tuple[Bind, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)


class NodeChecker(FieldChecker):
    """Checks node-configs and builds each node from its layers."""

    def __init__(self, report: Report, directory: Path, *, strict: bool) -> None:
        super().__init__(report)
        self.directory = directory  # relative bind sources and label paths start here
        self.strict = strict  # containerlab's rules only: no `kind: frr`

    def check_name(self, name: str, path: str, line: int, what: str) -> None:
        problem = name_problem(name)
        if problem:
            self.report(path, line, f"{what} {name!r} {problem}")

    def check_kind(self, kind: str, path: str, line: int) -> None:
        if kind == "frr":
            if self.strict:
                self.report(path, line, FRR_KIND_MESSAGE)
        elif kind not in CONTAINERLAB_KINDS:
            choices = CONTAINERLAB_KINDS if self.strict else RUNNER_KINDS
            self.report(path, line, f"unknown kind {kind!r}{did_you_mean(kind, choices)}")

    def section(self, y: YamlValue, path: str) -> Section:
        entries = self.mapping(y, path) if y.value is not None else {}
        if entries is None:
            return Section()
        self.known_keys(entries, NODE_CONFIG_KEYS, path)
        section = Section(
            kind=self.string(entries, "kind", path),
            group=self.string(entries, "group", path),
            image=self.string(entries, "image", path),
            exec=self.string_list(entries, "exec", path),
            binds=self.binds(entries, path),
            labels=self.string_map(entries, "labels", path),
            env=self.string_map(entries, "env", path),
        )
        for key in OTHER_STRING_KEYS:
            self.string(entries, key, path)
        for key in OTHER_STRING_LIST_KEYS:
            self.string_list(entries, key, path)
        for key in INTEGER_KEYS:
            self.integer(entries, key, path)
        for key in BOOLEAN_KEYS:
            self.boolean(entries, key, path)
        if section.kind is not None:
            self.check_kind(section.kind, key_path(path, "kind"), entries["kind"].line)
        self.check_runner_labels(entries, path)
        return section

    def check_runner_labels(self, entries: dict[str, YamlValue], path: str) -> None:
        # A typo such as "ture" would silently run the node without LXD.
        labels = entries["labels"].value if "labels" in entries else None
        lxd = labels.get("fabric.lxd") if isinstance(labels, dict) else None
        if lxd is None or not isinstance(lxd.value, str):
            return
        if lxd.value.strip().lower() not in TRUE_WORDS + FALSE_WORDS:
            message = f"must be one of {', '.join(TRUE_WORDS + FALSE_WORDS)}, not {lxd.value!r}"
            self.report(key_path(path, "labels.fabric.lxd"), lxd.line, message)

    def binds(self, entries: dict[str, YamlValue], parent: str) -> tuple[Bind, ...]:
        binds: list[Bind] = []
        seen_specs: dict[str, str] = {}
        seen_targets: dict[str, str] = {}
        for spec, path, line in self.string_items(entries, "binds", parent) or []:
            if spec in seen_specs:
                self.report(path, line, f"duplicate bind {spec!r} (also {seen_specs[spec]})")
                continue
            seen_specs[spec] = path
            try:
                bind = parse_bind(spec, self.directory)
            except ValueError as error:
                self.report(path, line, str(error))
                continue
            target = posixpath.normpath(bind.target)
            if target in seen_targets:
                self.report(path, line, f"target {bind.target!r} is already bound by {seen_targets[target]}")
                continue
            seen_targets[target] = path
            binds.append(bind)
        return tuple(binds)

    def named_sections(self, y: YamlValue | None, path: str, *, kind_keys: bool) -> dict[str, Section]:
        entries = self.mapping(y, path) if y is not None else {}
        sections = {}
        for name, item in (entries or {}).items():
            if kind_keys:
                self.check_kind(name, key_path(path, name), item.line)
            sections[name] = self.section(item, key_path(path, name))
        return sections

    def nodes(
        self, y: YamlValue, defaults: Section, kinds: dict[str, Section], groups: dict[str, Section]
    ) -> dict[str, Node | None]:
        """Every node name (so links can refer to it) and its model, None where it cannot be built."""
        path = "topology.nodes"
        entries = self.mapping(y, path) or {}
        nodes: dict[str, Node | None] = {}
        for name, item in entries.items():
            node_path = key_path(path, name)
            self.check_name(name, node_path, item.line, "node name")
            section = self.section(item, node_path)
            group = None
            if section.group is not None:
                group = groups.get(section.group)
                if group is None:
                    known = did_you_mean(section.group, groups)
                    message = f"group {section.group!r} is not defined in topology.groups{known}"
                    self.report(key_path(node_path, "group"), self.line_of(item, "group"), message)
            nodes[name] = self.resolve(name, node_path, item.line, (section, group, defaults), kinds)
        return nodes

    @staticmethod
    def line_of(y: YamlValue, key: str) -> int:
        child = y.value.get(key) if isinstance(y.value, dict) else None
        return child.line if child is not None else y.line

    def resolve(
        self,
        name: str,
        path: str,
        line: int,
        layers: tuple[Section, Section | None, Section],
        kinds: dict[str, Section],
    ) -> Node | None:
        """Merge node > group > kind > defaults, as containerlab does; the kind comes from the others."""
        node, group, defaults = layers
        kind = next((layer.kind for layer in layers if layer is not None and layer.kind), None)
        if kind is None:
            self.report(path, line, "no kind: set 'kind' on the node, its group or topology.defaults")
            return None
        ordered = [layer for layer in (node, group, kinds.get(kind), defaults) if layer is not None]
        image = next((layer.image for layer in ordered if layer.image is not None), None)
        exec_ = next((layer.exec for layer in ordered if layer.exec is not None), ())
        binds: dict[str, Bind] = {}
        labels: dict[str, str] = {}
        env: dict[str, str] = {}
        for layer in reversed(ordered):  # lowest first, so higher layers overwrite
            binds.update((posixpath.normpath(bind.target), bind) for bind in layer.binds)
            labels.update(layer.labels)
            env.update(layer.env)
        return Node(name, kind, image, tuple(binds.values()), exec_, labels, env, self.directory)
