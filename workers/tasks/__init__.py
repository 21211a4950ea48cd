"""Thin task entry points: ids in, services or reconcilers called."""
