"""Gateway credentials (API keys), team access and rate-limit policy, and managed provider backends."""
