"""The one learner loop (CPT, SFT; RL reuses its strategies and checkpoints) on Ray Train."""
