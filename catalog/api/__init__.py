"""HTTP interface of the catalog."""
