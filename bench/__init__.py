"""Benchmarks of this project: training step, generation, data pipeline, profile, scoring and DTW.

Run each one as a module from the repository root, so that ``bench`` and the project packages
import without any path set-up:

    python -m bench.train_step
    python -m bench.generate
    python -m bench.data
    python -m bench.profile_step
    python -m bench.eval_metrics
    python -m bench.dtw

``bench.common`` holds what the torch benchmarks share. None of these is a test;
tests/test_bench.py runs each in its tiniest mode.
"""
