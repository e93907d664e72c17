"""benchmarks/realism_cues.py's pieces: the pose matching and the labels-only classifier that
docs/experiments.md's realism diagnosis rests on."""

import numpy as np

from benchmarks.realism_cues import pose_matched_rows, pose_only_accuracy


def test_pose_matching_gives_each_query_the_nearest_pool_row_and_never_a_row_twice():
    pool = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    rows = pose_matched_rows(pool, np.array([[0.9, 0.0], [1.1, 0.0], [0.0, 9.0]]))
    assert rows.tolist() == [1, 0, 3]  # the second query's nearest row (1) is taken: the next nearest


def test_the_labels_only_classifier_is_at_chance_on_one_distribution_and_perfect_on_disjoint_ones():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(400, 5)), rng.normal(size=(400, 5))
    assert 40 < pose_only_accuracy(a, b, seed=0) < 60
    assert pose_only_accuracy(a, b + 20.0, seed=0) == 100.0
