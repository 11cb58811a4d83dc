"""The VXLAN overlay: one L2 bridge across hosts, planned from config and the LXD snapshot."""
