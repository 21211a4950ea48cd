"""Model deployments: desired spec, generation, observed status."""
