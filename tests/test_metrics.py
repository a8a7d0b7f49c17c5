import numpy as np
import pytest

import omiclip as oc


def test_recall_at_k_hand_computed():
    scores = np.array(
        [
            [0.9, 0.1, 0.0],  # query 0: its own reference scores highest -> rank 1
            [0.8, 0.5, 0.1],  # query 1: beaten by reference 0 -> rank 2
            [0.3, 0.3, 0.3],  # query 2: ties do not push it down -> rank 1
        ]
    )
    query, reference = np.eye(3), scores.T  # query_i . reference_j == scores[i, j]
    assert oc.metrics.recall_at_k(query, reference, 1) == pytest.approx(2 / 3)
    assert oc.metrics.recall_at_k(query, reference, 2) == 1.0
    assert oc.metrics.recall_at_k(query, reference, 0.5) == 1.0  # ceil(0.5 * 3) = 2 candidates
    assert oc.metrics.recall_at_k(query, reference, 0.2) == pytest.approx(2 / 3)


def test_recall_at_k_random_is_chance():
    rng = np.random.default_rng(0)
    query, reference = rng.normal(size=(2000, 16)), rng.normal(size=(2000, 16))
    assert oc.metrics.recall_at_k(query, reference, 0.1, block_size=300) == pytest.approx(0.1, abs=0.03)


def test_recall_at_k_errors():
    with pytest.raises(ValueError, match="paired"):
        oc.metrics.recall_at_k(np.ones((3, 2)), np.ones((4, 2)), 1)
    with pytest.raises(ValueError, match="k must be"):
        oc.metrics.recall_at_k(np.ones((3, 2)), np.ones((3, 2)), 5)
