"""Serving the policy-free model with Ray Serve LLM."""
