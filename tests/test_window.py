"""Window matching by FFT correlation against brute force."""
from __future__ import annotations

import numpy as np
import pytest

from alignment.reference import naive_window_costs
from alignment.window import best_window, window_costs


@pytest.mark.parametrize("length,t_ref,dim", [(1, 1, 1), (1, 9, 3), (5, 5, 2), (7, 30, 66), (31, 64, 4)])
def test_window_costs_equal_brute_force(length, t_ref, dim):
    rng = np.random.default_rng(length * 100 + t_ref)
    q, r = rng.normal(size=(length, dim)), rng.normal(size=(t_ref, dim))
    brute = np.array(naive_window_costs(q.tolist(), r.tolist()))
    np.testing.assert_allclose(window_costs(q, r), brute, rtol=1e-9, atol=1e-9)
    assert best_window(q, r).start == int(np.argmin(brute))


def test_planted_window_is_found_exactly():
    rng = np.random.default_rng(7)
    r = rng.normal(size=(90, 66))
    q = r[37:37 + 40] + 0.001 * rng.normal(size=(40, 66))
    match = best_window(q, r)
    assert (match.start, match.length) == (37, 40)
    assert match.cost == pytest.approx(float(((q - r[37:77]) ** 2).sum()), rel=1e-9)


def test_hand_case():
    r = np.array([[0.0], [1.0], [3.0], [4.0]])
    q = np.array([[3.0], [4.0]])
    # windows: [0,1] -> 9+9=18, [1,3] -> 4+1=5, [3,4] -> 0
    np.testing.assert_allclose(window_costs(q, r), [18.0, 5.0, 0.0], atol=1e-12)


def test_query_longer_than_reference_is_refused():
    with pytest.raises(ValueError, match="must be 1..3 frames"):
        window_costs(np.zeros((4, 2)), np.zeros((3, 2)))
