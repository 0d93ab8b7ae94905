import numpy as np
import pytest

from audit.index import ExactIndex
from rounding import assert_within, sq_distance_bound, sq_distances64


def brute_force_knn(queries, data, k, exclude_self=False):
    """Reference: all pairwise Euclidean distances in float64, stable sort."""
    d = np.sqrt(((queries[:, None, :].astype(np.float64) - data[None, :, :]) ** 2).sum(-1))
    if exclude_self:
        np.fill_diagonal(d, np.inf)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(d, idx, axis=1), idx


@pytest.fixture()
def data():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((500, 24)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = rng.standard_normal((300, 24)).astype(np.float32)
    return x, q


@pytest.mark.parametrize("batch_size", [4096, 7])
def test_search_matches_brute_force(data, batch_size):
    x, q = data
    got = ExactIndex(x).search(q, k=5, batch_size=batch_size)
    ref_d, ref_i = brute_force_knn(q, x, 5)
    np.testing.assert_array_equal(got.indices, ref_i)
    np.testing.assert_allclose(got.distances, ref_d, rtol=0, atol=1e-5)


@pytest.mark.parametrize("batch_size", [4096, 13])
def test_self_search_excludes_self(data, batch_size):
    x, _ = data
    got = ExactIndex(x).self_search(k=5, batch_size=batch_size)
    ref_d, ref_i = brute_force_knn(x, x, 5, exclude_self=True)
    np.testing.assert_array_equal(got.indices, ref_i)
    np.testing.assert_allclose(got.distances, ref_d, rtol=0, atol=1e-5)
    assert not (got.indices == np.arange(len(x))[:, None]).any()


def test_exact_duplicates_are_at_distance_zero():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((50, 16)).astype(np.float32) * 10 + 3  # large norms: expansion error would show
    x[7] = x[3]
    got = ExactIndex(x).self_search(k=3)
    assert got.distances[3, 0] == 0.0 and got.indices[3, 0] == 7
    assert got.distances[7, 0] == 0.0 and got.indices[7, 0] == 3
    ref_d, _ = brute_force_knn(x, x, 3, exclude_self=True)
    np.testing.assert_allclose(got.distances, ref_d, rtol=1e-6, atol=0)


def test_many_duplicates_self_search_distances():
    x = np.zeros((6, 4), dtype=np.float32)  # more copies than k+1: self may not be returned
    x[5] = 1.0
    got = ExactIndex(x).self_search(k=2)
    assert np.all(got.distances[:5] == 0.0)
    for i in range(5):
        assert i not in got.indices[i]
    np.testing.assert_allclose(got.distances[5], [2.0, 2.0])


def test_input_validation():
    x = np.ones((4, 3), dtype=np.float32)
    index = ExactIndex(x)
    with pytest.raises(ValueError, match="dimension"):
        index.search(np.ones((2, 5)), k=1)
    with pytest.raises(ValueError, match="at least"):
        index.self_search(k=4)
    with pytest.raises(ValueError, match="k must be"):
        index.search(x, k=0)
    with pytest.raises(ValueError, match="NaN"):
        ExactIndex(np.array([[np.nan, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="2-D"):
        ExactIndex(np.ones(3))


def check_true_prefix(queries, x, fetch, self_start, sq, idx):
    """`sq`, `idx` are each row's `fetch` smallest squared distances (float32 expansion) and their
    rows: every value within the float32 bound of the exact distance it claims, and every row left
    out no nearer than the last one fetched, up to the same bound."""
    exact, exact_error = sq_distances64(queries, x)
    bound = sq_distance_bound(queries, x) + exact_error
    if self_start is not None:
        np.fill_diagonal(exact, np.inf)
    rows = np.arange(len(queries))[:, None]
    assert_within(sq, exact[rows, idx], bound[rows, idx], "fetched distances")
    # The k-th order statistic of values each within e_j of exact ones is within max e_j of the exact
    # one, so each sorted list is the exact sorted prefix up to the row's largest bound.
    row_bound = bound.max(axis=1, keepdims=True)
    expected = np.sort(exact, axis=1)[:, :fetch]
    assert_within(sq, expected, row_bound, "sorted prefix")
    fetched = np.zeros_like(exact, dtype=bool)
    np.put_along_axis(fetched, idx, True, axis=1)
    left_out_min = np.where(fetched, np.inf, exact).min(axis=1)
    assert np.all(left_out_min >= sq[:, -1] - 2 * row_bound[:, 0])
    if self_start is not None:
        assert not np.any(idx == np.arange(len(x))[:, None])


def test_nearest_candidates_are_a_true_prefix_of_each_sorted_row():
    """The group-minimum screen may only skip entries at or above the last one fetched; every
    tolerance is the float32 bound of the inputs' norms and dimension (any BLAS kernel)."""
    from audit.nearest import nearest_candidates

    rng = np.random.default_rng(3)
    x = rng.standard_normal((3000, 24)).astype(np.float32)
    x[100:140] = x[99]  # a wall of exact duplicates, longer than fetch
    x[2000:2003] = rng.standard_normal(24).astype(np.float32)
    queries = np.vstack([x[:50], x[95:145], rng.standard_normal((50, 24)).astype(np.float32)])
    for q, self_start in ((queries, None), (x, 0)):
        sq, idx = nearest_candidates(q, x, 13, self_start=self_start)
        check_true_prefix(q, x, 13, self_start, sq, idx)
    # The check is tight enough to catch a result off by more than its bound, or a skipped neighbour.
    bound = sq_distance_bound(queries[:1], x).max()
    sq, idx = nearest_candidates(queries, x, 13)
    for mutate in (lambda s, i: s.__setitem__((0, 0), s[0, 0] + 2.5 * bound),
                   lambda s, i: i.__setitem__((120, 0), int(np.argmax(sq_distances64(queries[120:121], x)[0][0])))):
        s, i = sq.copy(), idx.copy()
        mutate(s, i)
        with pytest.raises(AssertionError):
            check_true_prefix(queries, x, 13, None, s, i)


def test_numpy_and_faiss_backends_agree_exactly():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2500, 32)).astype(np.float32)
    x[10:14] = x[9]
    y = np.vstack([rng.standard_normal((300, 32)).astype(np.float32), x[5:15]])
    for search in (lambda ix: ix.search(y, 6), lambda ix: ix.self_search(6)):
        a, b = search(ExactIndex(x)), search(ExactIndex(x, backend="faiss"))
        np.testing.assert_array_equal(a.sq_distances, b.sq_distances)
        np.testing.assert_array_equal(a.indices, b.indices)
    with pytest.raises(ValueError, match="backend"):
        ExactIndex(x, backend="annoy")
