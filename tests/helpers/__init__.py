"""Shared test helpers (training runs on the bundled sample tree)."""
