"""The pure logic of the RL stage (no Ray, no engine, no model): the GRPO/DAPO/PoRo objective,
the rollout data structures that keep the PolicyRollout contract, DAPO dynamic sampling, and
DAPO overlong reward shaping. The learner and rollout actors call into these modules."""
