"""Evaluation: suites (policy-free, in-context, override, referral, efficiency, forgetting), batch
inference with vLLM through Ray Data, scoring, and the run's report."""
