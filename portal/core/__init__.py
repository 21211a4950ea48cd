"""Shared kernel: base models, domain errors, encryption of secrets at rest, audit log."""
