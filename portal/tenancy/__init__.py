"""Teams, memberships and roles, users, quotas."""
