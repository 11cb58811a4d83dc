"""The DHCP/DNS authority: one dnsmasq on the overlay, its config derived from LXD (docs/authority.md)."""
