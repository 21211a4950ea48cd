"""DRF plumbing: authentication, permissions, error format, pagination, idempotency."""
