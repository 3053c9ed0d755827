"""GTAPolicy: versioned tool calling under user-conditional rules (paper §3.2-3.4).

tools: the 14 tool types as data. rules: the 24 rules, the resolver, the override. policy_doc: the
policy text and the override block. scenarios + generator: synthetic instances. gta_loader: the real
GTA benchmark. instances: a task -> one sample record. cot: reverse CoT. dataset: splits, coverage,
manifest. CLI: `python -m mpi_ray.data.gta_policy --help`. Scoring lives in mpi_ray.rewards.gta_score.
"""
