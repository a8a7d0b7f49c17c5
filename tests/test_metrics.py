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
    with pytest.raises(ValueError, match="`k` must be"):
        oc.metrics.recall_at_k(np.ones((3, 2)), np.ones((3, 2)), 5)


class TestScores:
    @pytest.fixture
    def pair(self):
        rng = np.random.default_rng(0)
        x = rng.poisson(3, size=(50, 6)).astype(float)
        return x, x + rng.normal(0, 2, size=x.shape)

    def test_pearson_and_kendall_match_scipy(self, pair):
        from scipy import stats

        x, y = pair
        expected = [stats.pearsonr(x[:, j], y[:, j]).statistic for j in range(6)]
        np.testing.assert_allclose(oc.metrics.pearson(x, y), expected)
        np.testing.assert_allclose(oc.metrics.pearson(x.T, y.T, axis=1), expected)
        taus = [stats.kendalltau(x[:, j], y[:, j]).statistic for j in range(6)]  # tau-b, ties in x
        np.testing.assert_allclose(oc.metrics.kendall_tau(x, y), taus)
        assert oc.metrics.pearson(x[:, 0], 2 * x[:, 0] + 1) == pytest.approx(1.0)
        assert np.isnan(oc.metrics.pearson(np.ones(5), np.arange(5.0)))

    def test_js_divergence_matches_scipy(self, pair):
        from scipy.spatial.distance import jensenshannon

        x, y = pair
        p, q = np.abs(x), np.abs(y)
        expected = [jensenshannon(p[:, j], q[:, j], base=2) ** 2 for j in range(6)]  # scipy gives the distance
        np.testing.assert_allclose(oc.metrics.js_divergence(p, q), expected)
        assert oc.metrics.js_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
        assert oc.metrics.js_divergence([1, 2], [2, 4]) == pytest.approx(0.0)
        with pytest.raises(ValueError, match="non-negative"):
            oc.metrics.js_divergence([-1, 2], [1, 1])

    def test_ssim(self):
        from skimage.metrics import structural_similarity

        rng = np.random.default_rng(1)
        x = rng.random((20, 20))
        assert oc.metrics.ssim(x, x) == pytest.approx(1.0)
        y = x + rng.normal(0, 0.2, x.shape)
        top = max(x.max(), y.max())
        assert oc.metrics.ssim(x, y, method="windowed") == pytest.approx(
            structural_similarity(x / top, y / top, data_range=1.0, win_size=7)
        )
        for method in ("global", "windowed"):
            closer = x + rng.normal(0, 0.01, x.shape)
            assert oc.metrics.ssim(x, y, method=method) < oc.metrics.ssim(x, closer, method=method)

    def test_ssim_default_is_eq_25_with_global_statistics(self):
        """Eq. 25 by hand on a 2×2 map pair (each map divided by its maximum, C1 = 1e-4, C2 = 9e-4)."""
        x = np.array([[0.0, 1.0], [2.0, 4.0]])  # / 4 -> 0, .25, .5, 1: mean .4375, var .1367..
        y = np.array([[1.0, 1.0], [3.0, 2.0]])  # / 3 -> 1/3, 1/3, 1, 2/3: mean .5833.., var .0763..
        a, b = x.ravel() / 4, y.ravel() / 3
        mu_a, mu_b = a.mean(), b.mean()
        cov = ((a - mu_a) * (b - mu_b)).mean()
        expected = (
            (2 * mu_a * mu_b + 1e-4) * (2 * cov + 9e-4) / ((mu_a**2 + mu_b**2 + 1e-4) * (a.var() + b.var() + 9e-4))
        )
        assert oc.metrics.ssim(x, y) == pytest.approx(expected, rel=1e-12)
        assert oc.metrics.ssim(x.ravel(), y.ravel()) == pytest.approx(expected, rel=1e-12)  # any shape
        # a smooth map and a noisy copy: the global SSIM is high, the windowed one (local statistics) much lower
        grid = np.add.outer(np.linspace(0, 1, 30), np.linspace(0, 1, 30))
        noisy = grid + np.random.default_rng(0).normal(0, 0.3, grid.shape).clip(-grid, None)
        assert oc.metrics.ssim(grid, noisy) > oc.metrics.ssim(grid, noisy, method="windowed") + 0.3

    def test_impact_score_by_hand(self):
        # three methods: the best has the lowest JS and the highest SSIM
        scores = oc.metrics.impact_score(js=[0.2, 0.4, 0.6], ssim_scores=[0.6, 0.4, 0.2])
        z = np.sqrt(1.5)  # z-scores of (-1, 0, 1) with population sd sqrt(2/3)
        np.testing.assert_allclose(scores, [z, 0, -z], atol=1e-12)
        with pytest.raises(ValueError, match="at least two methods"):
            oc.metrics.impact_score([0.1], [0.2])

    def test_weighted_f1_mse_and_ch(self):
        from sklearn.metrics import calinski_harabasz_score, f1_score

        truth = ["a", "a", "a", "b", "b", "c"]
        predicted = ["a", "a", "b", "b", "b", "a"]
        # per class F1: a 2*2/(2*2+1+1)=0.667, b 2*2/(4+1)=0.8, c 0; weights 3/6, 2/6, 1/6
        assert oc.metrics.weighted_f1(truth, predicted) == pytest.approx(0.5 * 2 / 3 + 2 / 6 * 0.8)
        assert oc.metrics.weighted_f1(truth, predicted) == pytest.approx(f1_score(truth, predicted, average="weighted"))
        assert oc.metrics.mse([1, 2, 3], [1, 2, 5]) == pytest.approx(4 / 3)
        points = np.array([[0, 0], [0, 1], [10, 10], [10, 11]], dtype=float)
        labels = [0, 0, 1, 1]
        assert oc.metrics.calinski_harabasz(points, labels) == pytest.approx(calinski_harabasz_score(points, labels))
        # between: 4 * 50 = 200 (k-1 = 1); within: 4 * 0.25 = 1 (n-k = 2) -> 200 / 0.5
        assert oc.metrics.calinski_harabasz(points, labels) == pytest.approx(400.0)
