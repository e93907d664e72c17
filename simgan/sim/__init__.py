"""Embedded simulators: UnityEyes-like eyes, depth hands, and the surrogate "real" domains."""
