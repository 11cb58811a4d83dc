"""fabric-lab: containerlab topology files run in network namespaces, for fabricd's labs and tests.

A development and lab tool, installed on its own (fabric_lab/pyproject.toml); not part of the agent.
"""
