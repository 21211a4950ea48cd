"""Celery tasks and everything that talks to clusters."""
