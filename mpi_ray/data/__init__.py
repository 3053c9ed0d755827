"""Datasets (ClevrPolicy, GTAPolicy), the one sample schema, and the Ray Data streams."""
