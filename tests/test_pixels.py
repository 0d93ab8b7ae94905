"""The `pixels` embedder against a direct computation of its definition."""

import numpy as np
from PIL import Image

from audit.embedding import embed_folder
from audit.pixels import fit_pixel_embedder
from audit.store import EmbeddingStore
from conftest import write_images


def test_pixels_equal_downsampled_pca_projection(tmp_path, cache_path):
    keys = write_images(tmp_path / "ref", 30, seed=1)
    (tmp_path / "ref" / "broken.png").write_bytes(b"not a png")  # listed as unreadable, not in the basis
    embedder = fit_pixel_embedder(tmp_path / "ref", size=8, dim=5)
    direct = np.array([np.asarray(Image.open(tmp_path / "ref" / k).convert("L").resize((8, 8), Image.Resampling.BOX),
                                  dtype=np.float64).ravel() / 255 for k in sorted(keys)])
    centred = direct - direct.mean(axis=0)
    np.testing.assert_allclose(embedder.mean, direct.mean(axis=0), atol=1e-6)
    # The basis spans the top principal axes: its rows are orthonormal eigenvectors of the covariance.
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred)
    np.testing.assert_allclose(np.abs(embedder.components @ eigenvectors[:, ::-1][:, :5]), np.eye(5), atol=1e-6)

    with EmbeddingStore(cache_path) as store:
        result = embed_folder(tmp_path / "ref", embedder, store, workers=0, progress=False)
    assert [s.key for s in result.skipped] == ["broken.png"] and result.keys == sorted(keys)
    np.testing.assert_allclose(result.vectors, centred @ embedder.components.T, atol=1e-5)
    assert result.model_identity["name"] == "pixels"

    other = fit_pixel_embedder(tmp_path / "ref", size=8, dim=4)
    assert other.model_id != embedder.model_id  # another basis is another feature space
