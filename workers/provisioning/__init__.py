"""Reconcilers, status derivation, and the pure manifest builders."""
