"""The only package that imports `kubernetes`: connections, apply, prune, errors."""
