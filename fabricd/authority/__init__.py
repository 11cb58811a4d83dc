"""The DHCP/DNS authority on the overlay: see docs/authority.md."""
