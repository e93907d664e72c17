"""Benchmarks of simgan's hot paths against the naive baselines public ports run.

`python -m benchmarks` runs all of them (short profile, under 5 minutes) and writes
benchmarks/results/*.json; each module also runs alone (`python -m benchmarks.bench_refine -h`).
"""
