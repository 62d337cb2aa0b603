"""Training: SFT and GRPO on TRL (sft.py, grpo.py), recipes (config.py), rewards (rewards.py), data (data.py).

Importing this package imports no torch or TRL; the trainers import them when they run.
"""
