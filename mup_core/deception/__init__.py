"""Deception at scale ("Tall Tales"): QA data, poisoned judges, SFT/RL policies, lying metrics."""
