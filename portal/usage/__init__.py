"""Usage ingestion, rating, rollups, budgets and cost reports."""
