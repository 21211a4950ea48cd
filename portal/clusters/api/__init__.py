"""HTTP interface of clusters."""
