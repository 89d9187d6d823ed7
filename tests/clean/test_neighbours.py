"""Neighbour search: the exact search is right, and faiss's approximate index agrees with it on real embeddings."""
from __future__ import annotations

import numpy as np
import pytest

from clean_setup import CLASSES, IMAGE_PX, fast_options
from smarthub.clean import ranking, review
from smarthub.clean.neighbours import nearest, query, unit_rows
from smarthub.model.embeddings import load_embedding_cache


def test_exact_search_matches_the_full_similarity_matrix():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    nb = nearest(x, k=5, exact=True)
    sim = unit_rows(x) @ unit_rows(x).T
    np.fill_diagonal(sim, -np.inf)
    expected = np.argsort(-sim, axis=1)[:, :5]
    assert (nb.index == expected).all()
    assert np.allclose(nb.similarity, np.take_along_axis(sim, expected, axis=1), atol=1e-5)
    assert not (nb.index == np.arange(300)[:, None]).any()  # never its own neighbour
    q = query(x, x[:3], k=1)
    assert q.index[:, 0].tolist() == [0, 1, 2]  # a query finds itself in the base


@pytest.mark.parametrize("n", [1, 2], ids=["one-row", "two-rows"])
def test_tiny_inputs(n):
    nb = nearest(np.ones((n, 4)), k=10)
    assert nb.index.shape == (n, n - 1)


@pytest.fixture(scope="module")
def real_embeddings(planted):
    ws, _ = planted
    review.review(ws, fast_options())  # fills the embedding cache (reused by every review test)
    cache = load_embedding_cache(ws, "mobilenet_v2", IMAGE_PX)
    result = review.review(ws, fast_options(show_all=True))
    labels = {e.sha256: e.label for e in result.entries}
    shas = sorted(cache)
    return np.stack([cache[s] for s in shas]), np.array([sorted(CLASSES).index(labels[s]) for s in shas])


def test_faiss_index_agrees_with_exact_search_on_real_embeddings(real_embeddings):
    x, labels = real_embeddings
    exact = nearest(x, k=ranking.KNN_K, exact=True)
    approx = nearest(x, k=ranking.KNN_K, exact=False)
    assert exact.exact and not approx.exact
    overlap = np.mean([len(set(a) & set(b)) / ranking.KNN_K for a, b in zip(exact.index, approx.index)])
    assert overlap >= 0.8
    p_exact = ranking.neighbour_label_probs(exact.index, exact.similarity, labels, n_classes=len(CLASSES))
    p_approx = ranking.neighbour_label_probs(approx.index, approx.similarity, labels, n_classes=len(CLASSES))
    assert np.mean(p_exact.argmax(axis=1) == p_approx.argmax(axis=1)) >= 0.95
    # the same near duplicates either way (the nearest neighbour is re-scored in the full space)
    assert (ranking.duplicates_from_neighbours(exact.index, exact.similarity)
            == ranking.duplicates_from_neighbours(approx.index, approx.similarity)).all()
