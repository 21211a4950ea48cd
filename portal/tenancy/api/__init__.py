"""HTTP interface of tenancy."""
