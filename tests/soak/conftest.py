"""The sandbox API server fixtures of tests/workers (one server per session, reset per test)."""

from tests.workers.conftest import clean_sandbox, sandbox

__all__ = ["clean_sandbox", "sandbox"]
