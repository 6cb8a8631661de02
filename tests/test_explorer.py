"""The explorer page's parts: the stratified subset, the spectra it carries, a self-contained page.

The page in a browser (click, TARGETID, neighbours against numpy) is tested on the ci workflow's
own page in tests/test_workflow.py.
"""

import base64
import json
import re

import numpy as np
import pytest

from astroclip_pipeline.evaluate.explorer import binned_spectra, explorer_page, quantised, stratified_subset


def test_stratified_subset_keeps_every_cluster():
    labels = np.concatenate([np.zeros(5000, int), np.ones(7, int), np.full(40, 2), np.full(300, -1)])
    subset = stratified_subset(labels, 500, per_label_min=20, seed=3)
    assert len(subset) == 500 and np.all(np.diff(subset) > 0)
    counts = {label: int(np.sum(labels[subset] == label)) for label in (-1, 0, 1, 2)}
    assert counts[1] == 7  # a cluster smaller than the minimum is there whole
    assert counts[2] >= 20 and counts[-1] >= 20
    np.testing.assert_array_equal(subset, stratified_subset(labels, 500, 20, seed=3))
    np.testing.assert_array_equal(stratified_subset(labels[:100], 500, 20, seed=3), np.arange(100))


def test_binned_spectra_weight_by_ivar_and_mark_missing_data():
    flux = np.array([[1.0, 3.0, 5.0, 7.0, 9.0], [2.0, 2.0, 4.0, 4.0, 0.0]])
    ivar = np.array([[1.0, 3.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0, 1.0]])
    wavelength, binned = binned_spectra(flux, ivar, np.array([10.0, 11, 12, 13, 14]), factor=2)
    np.testing.assert_allclose(wavelength, [10.5, 12.5])  # the odd last pixel is dropped
    np.testing.assert_allclose(binned[0, 0], (1 * 1 + 3 * 3) / 4)
    assert np.isnan(binned[0, 1])  # no pixel with data: no value
    np.testing.assert_allclose(binned[1], [2.0, 4.0])


def test_quantised_spectra_round_trip_within_a_step():
    rng = np.random.default_rng(0)
    spectra = rng.normal(5, 3, size=(4, 300))
    spectra[1, 10:20] = np.nan
    spectra[3] = 2.5  # a flat spectrum
    q = quantised(spectra)
    codes = np.frombuffer(base64.b64decode(q["codes"]), "<i2").reshape(spectra.shape)
    decoded = np.where(
        codes == -32768, np.nan, np.array(q["offset"])[:, None] + (codes + 32500.0) * np.array(q["scale"])[:, None]
    )
    np.testing.assert_array_equal(np.isnan(decoded), np.isnan(spectra))
    step = np.array(q["scale"])[:, None]
    assert np.all(
        np.abs(decoded - spectra)[~np.isnan(spectra)] <= (0.5 * step + 1e-12).repeat(300, 1)[~np.isnan(spectra)]
    )


def test_page_is_self_contained_and_keeps_targetids_exact():
    rng = np.random.default_rng(1)
    n = 30
    embeddings = rng.normal(size=(n, 16)).astype(np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    targetid = 39627752092991638 + np.arange(n)  # above 2**53: a JavaScript number would round it
    html = explorer_page(
        galaxies={
            "TARGETID": targetid,
            "image_embedding": embeddings,
            "spectrum_embedding": embeddings[::-1].copy(),
            "Z_HP": rng.uniform(0, 1, n),
            "LOGMSTAR": rng.uniform(8, 12, n),
        },  # fmt: skip
        umaps={m: rng.normal(size=(n, 2)) for m in ("image", "spectrum", "combined")},
        labels={"DBSCAN": rng.integers(-1, 3, n)},
        thumbnails=["data:image/jpeg;base64,AAAA"] * n,
        wavelength=np.linspace(3600, 9800, 50),
        spectra=rng.normal(size=(n, 50)),
        top_k=5,
        title="test",
    )
    assert not re.search(r"<(script|link)[^>]+(src|href)=\"https?://", html), "the page must work offline"
    assert '"39627752092991638"' in html
    blob = json.loads(re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', html, re.S)[1])
    decoded = np.frombuffer(base64.b64decode(blob["image_embedding"]), "<f4").reshape(n, 16)
    np.testing.assert_array_equal(decoded, embeddings)  # the browser searches exactly these vectors
    assert blob["top_k"] == 5 and set(blob["pairs"]) == {
        "image->image", "spectrum->spectrum", "image->spectrum", "spectrum->image"
    }  # fmt: skip
    assert html.rstrip().endswith("</html>") and "window.AstroExplorer" in html


def test_too_many_neighbours_for_the_page_is_named(tmp_path):
    from astroclip_pipeline.evaluate import explorer

    with pytest.raises(ValueError, match="explorer.top_k = 20"):
        explorer.write_explorer([], [], {}, {}, {}, tmp_path / "x.html", 10, 5, 20, 4, 0)
