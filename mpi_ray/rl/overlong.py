"""DAPO soft overlong punishment: a length-dependent penalty added to the reward, so responses that
run into the length limit are discouraged smoothly instead of being cut without signal.

    penalty(L) = 0                                     if L <= max_len - buffer
               = -penalty * (L - (max_len - buffer)) / buffer   if max_len - buffer < L <= max_len
               = -penalty                              if L > max_len

`L` is the response length in tokens, `max_len` is rollout.max_response_len, and `buffer` and
`penalty` are rl.overlong.buffer / rl.overlong.penalty. A response that hits max_len exactly (the
engine truncated it) gets the full -penalty whenever buffer > 0.
"""

from __future__ import annotations

from mpi_ray.config.schema import OverlongConfig


def overlong_penalty(length: int, max_len: int, buffer: int, penalty: float) -> float:
    """The (non-positive) reward term for a response of `length` tokens."""
    if not 0 <= buffer <= max_len:
        raise ValueError(f"rl.overlong.buffer={buffer} must be between 0 and rollout.max_response_len={max_len}")
    free_len = max_len - buffer
    if length <= free_len:
        return 0.0
    if length > max_len:
        return -penalty
    return -penalty * (length - free_len) / buffer


def shaped_reward(reward: float, length: int, max_len: int, cfg: OverlongConfig) -> float:
    """The reward with the overlong penalty added when rl.overlong.enabled."""
    if not cfg.enabled:
        return reward
    return reward + overlong_penalty(length, max_len, cfg.buffer, cfg.penalty)
