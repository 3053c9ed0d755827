"""Rewards and scores shared by evaluation and RL: boxed-answer extraction, the safe arithmetic
evaluator, text similarity, and the GTAPolicy tool-call score. Model output is hostile input here."""
