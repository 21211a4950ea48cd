"""Registered GPU clusters, their gateways, accelerator pools and inventory."""
