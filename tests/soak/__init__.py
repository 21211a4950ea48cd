"""The fault soak: churn under injected faults and killed workers, then convergence within a bound."""
