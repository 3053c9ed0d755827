"""Rollout engines: vLLM behind one interface (generate n samples with log-probs, load weights, version)."""
