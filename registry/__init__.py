"""Permissioned blockchain receivables registry: the Python core (no web framework inside)."""

__version__ = "0.1.0"
