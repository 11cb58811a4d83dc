"""Anycast services: the pure core (definitions, per-backend health, the plan); no I/O here."""
