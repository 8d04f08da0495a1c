"""Offline tools of the repository (resource builders); not imported at runtime."""
