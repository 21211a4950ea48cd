"""A Kubernetes API stand-in for tests and the demo: `python -m workers.sandbox`."""
