"""The DHCP/DNS authority: one dnsmasq for the whole overlay, elected, with failover."""
