"""Galaxy morphology: the mock's truth in its images, simulated Galaxy Zoo votes, the v2 classification protocol."""

import galsim
import numpy as np
import pandas as pd
import pytest
import torch

from astroclip_pipeline.evaluate.adaptive_moments import adaptive_moments
from astroclip_pipeline.evaluate.morphology import (
    MOMENTS_FEATURES,
    MorphologyProtocol,
    accuracy,
    match_labels,
    morphology_features,
    morphology_metrics,
    predict_probabilities,
    protocol_rows,
    question_rows,
    soft_cross_entropy,
    train_classifier,
    weighted_f1,
)
from astroclip_pipeline.sources.galaxy_zoo import (
    CATALOGUE_NAME,
    DEPENDENCIES,
    QUESTIONS,
    answer_columns,
    catalogue_columns,
    cross_match,
    read_volunteer_catalogue,
    total_column,
    validate_volunteer_catalogue,
)
from astroclip_pipeline.sources.http import DownloadError, Fetcher, RetryPolicy
from astroclip_pipeline.sources.mock.galaxy_zoo import apparent_axis_ratio, simulate_votes
from astroclip_pipeline.sources.mock.images import MOFFAT_BETA, render_cutouts
from astroclip_pipeline.sources.mock.population import PopulationSpec, draw_population

from .loopback import Fault, LoopbackServer


@pytest.fixture(scope="module")
def population() -> pd.DataFrame:
    galaxies = draw_population(PopulationSpec(n_galaxies=1000), np.random.default_rng(3))
    galaxies["ARTEFACT"] = 0
    return galaxies


@pytest.fixture(scope="module")
def votes(population) -> pd.DataFrame:
    return simulate_votes(population, np.random.default_rng(4), psf_fwhm=1.3)


def test_catalogue_has_the_gzd5_layout(votes):
    assert sum(len(a) for a in QUESTIONS.values()) == 34
    assert list(votes.columns) == catalogue_columns()
    assert len(votes.columns) == 3 + 10 + 34 * 3
    assert votes.iauname.str.match(r"^J\d{6}\.\d{2}[+-]\d{6}\.\d$").all()


def test_votes_reproduce_the_decision_tree(votes):
    """A question is asked of exactly the volunteers who gave the answer it follows."""
    for question, parents in DEPENDENCIES.items():
        total = votes[total_column(question)].to_numpy()
        counts = votes[answer_columns(question)].to_numpy()
        np.testing.assert_array_equal(counts.sum(axis=1), total, err_msg=question)
        if parents is not None:
            np.testing.assert_array_equal(total, sum(votes[p].to_numpy() for p in parents), err_msg=question)
        asked = total > 0
        for suffix in ("_fraction", "_debiased"):
            fractions = votes[answer_columns(question, suffix)].to_numpy()
            np.testing.assert_allclose(fractions[asked].sum(axis=1), 1.0, err_msg=question + suffix)
            assert np.isnan(fractions[~asked]).all()
            assert (fractions[asked] >= 0).all()
    # Everyone but the volunteers who answered "artifact" reaches the last question.
    np.testing.assert_array_equal(
        votes["merging_total-votes"], votes["smooth-or-featured_total-votes"] - votes["smooth-or-featured_artifact"]
    )
    # GZD-5-like totals: most galaxies near 40 votes, some under the protocol's cut of 3.
    first = votes["smooth-or-featured_total-votes"]
    assert 30 < first.median() < 50 and (first < 3).mean() > 0.01


def test_votes_follow_the_truth(population, votes):
    featured = votes["smooth-or-featured_featured-or-disk_fraction"]
    large = population.RE_DISK > 2.0
    assert featured[population.FEATURED & large].mean() > 0.6 > 0.2 > featured[~population.FEATURED].mean()
    # Small disks look smooth to volunteers: the bias the catalogue's debiasing is about.
    small = population.RE_DISK < 0.8
    assert featured[population.FEATURED & small].mean() < featured[population.FEATURED & large].mean() - 0.2
    # Volunteers call a disk edge-on when it looks thin: large edge-on disks, not those the seeing rounds.
    edge_on = votes["disk-edge-on_yes_fraction"]
    other_disks = population.FEATURED & ~population.EDGE_ON
    assert edge_on[population.EDGE_ON & large].mean() > 0.7 > 0.2 > edge_on[other_disks].mean()
    assert edge_on[population.EDGE_ON & small].mean() < 0.25


def test_apparent_axis_ratio_is_what_adaptive_moments_measure():
    """The table's interpolation against GalSim's HSM on a noise-free image off the table's grid."""
    psf = galsim.Moffat(beta=MOFFAT_BETA, fwhm=1.1)
    for profile, shape in (("exponential", galsim.Exponential), ("devaucouleurs", galsim.DeVaucouleurs)):
        for radius, q in ((0.7, 0.3), (2.3, 0.55)):
            image = galsim.Convolve(shape(half_light_radius=radius).shear(q=q, beta=0.0 * galsim.degrees), psf)
            measured = galsim.hsm.FindAdaptiveMom(image.drawImage(nx=96, ny=96, scale=0.262)).observed_shape.q
            assert apparent_axis_ratio(radius, q, 1.1, profile) == pytest.approx(measured, abs=0.01)
    # A thin disk much smaller than the seeing looks round; a large one shows its own axis ratio.
    small, large = apparent_axis_ratio([0.1, 20.0], [0.2, 0.2], 1.3)
    assert small > 0.9 and large == pytest.approx(0.2, abs=0.03)


def _face_on_spiral(population: pd.DataFrame, **changes) -> pd.DataFrame:
    galaxy = population[population.FEATURED].iloc[[0]].copy()
    defaults = {
        "RE_DISK": 3.0,
        "RE_BULGE": 0.4,
        "Q_DISK": 1.0,
        "Q_BULGE": 1.0,
        "ARMS": 2,
        "PITCH": 20.0,
        "BAR": 0,
        "MERGER": 0,
    }
    for column, value in {**defaults, **changes}.items():
        galaxy[column] = value
    return galaxy


def _azimuthal_contrast(image: np.ndarray, radius: float) -> float:
    """Relative spread of the r band's mean in 16 sectors of a ring of this radius (pixels) about
    the light's centroid: 0 for a round galaxy, large for arms or a bar."""
    size = image.shape[-1]
    y, x = np.mgrid[0:size, 0:size].astype(float)
    weights = image[1] / image[1].sum()
    dx, dy = x - np.sum(weights * x), y - np.sum(weights * y)
    ring = np.abs(np.hypot(dx, dy) - radius) < 1.0
    sector = ((np.arctan2(dy, dx)[ring] + np.pi) / (2 * np.pi) * 16).astype(int) % 16
    means = np.array([image[1][ring][sector == s].mean() for s in range(16)])
    return float(means.std() / means.mean())


def test_spiral_arms_bars_and_edge_on_disks_are_drawn(population):
    render = lambda g: render_cutouts(g, 64, np.random.default_rng(0), neighbour_rate=0, noise=False)[0]  # noqa: E731
    spiral = render(_face_on_spiral(population))
    plain = render(_face_on_spiral(population, ARMS=0))
    assert _azimuthal_contrast(spiral, 12) > 0.25 > 0.03 > _azimuthal_contrast(plain, 12)
    # Total light is kept: the arms redistribute the disk's light, they do not add any.
    np.testing.assert_allclose(spiral.sum(), plain.sum(), rtol=0.02)
    barred = render(_face_on_spiral(population, ARMS=0, BAR=2))
    assert _azimuthal_contrast(barred, 6) > 0.15 > 0.03 > _azimuthal_contrast(plain, 6)
    edge_on = render(_face_on_spiral(population, ARMS=0, Q_DISK=0.2, RE_BULGE=0.1))
    y, x = np.mgrid[0:64, 0:64] - 31.5
    weights = edge_on[1] / edge_on[1].sum()
    moments = np.array(
        [[np.sum(weights * x * x), np.sum(weights * x * y)], [np.sum(weights * x * y), np.sum(weights * y * y)]]
    )
    minor, major = np.sqrt(np.linalg.eigvalsh(moments))
    assert minor / major < 0.45
    merger = render(_face_on_spiral(population, ARMS=0, MERGER=3, COMPANION_FLUX_RATIO=0.5))
    assert merger.sum() > 1.3 * plain.sum()  # the companion is light beyond the galaxy's own


def test_accuracy_and_weighted_f1_against_hand_computed_values():
    true = np.eye(3)[[0, 0, 1, 1, 2]]
    predicted = np.eye(3)[[0, 1, 1, 1, 0]] * 0.6 + 0.1
    assert accuracy(true, predicted) == pytest.approx(0.6)
    # F1 per answer: 0 -> P 1/2, R 1/2: 0.5; 1 -> P 2/3, R 1: 0.8; 2 -> 0. Weighted by support 2, 2, 1.
    assert weighted_f1(true, predicted) == pytest.approx((2 * 0.5 + 2 * 0.8 + 0.0) / 5)


def _labels(first_totals, question_totals) -> pd.DataFrame:
    n = len(first_totals)
    frame = pd.DataFrame({"matched": ~np.isnan(first_totals)})
    for question in QUESTIONS:
        totals = np.asarray(first_totals if question == "smooth-or-featured" else question_totals, dtype=float)
        frame[total_column(question)] = totals
        for column in answer_columns(question, "_debiased"):
            frame[column] = np.where(totals > 0, 1.0 / len(QUESTIONS[question]), np.nan)
    assert len(frame) == n
    return frame


def test_vote_thresholds_of_the_protocol():
    first = np.array([2, 3, 40, np.nan, 50, 41, 39, 38, 37, 36, 35, 60])
    labels = _labels(first, [0, 34, 35, 0, 36, 34, 35, 34, 35, 34, 35, 80])
    train, test = protocol_rows(labels, MorphologyProtocol())
    # Kept: >= 3 votes and matched (rows 0 and 3 go); 10 kept, the first 8 train.
    np.testing.assert_array_equal(train, [1, 2, 4, 5, 6, 7, 8, 9])
    np.testing.assert_array_equal(test, [10, 11])
    # Test rows count for a question only with more than 34 votes on it; 34 is not enough.
    np.testing.assert_array_equal(question_rows(labels, "bar", np.arange(12), 34), [2, 4, 6, 8, 10, 11])
    np.testing.assert_array_equal(question_rows(labels, "bar", np.arange(12), 0), [1, 2, 4, 5, 6, 7, 8, 9, 10, 11])


def test_soft_targets_get_one_softmax():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    fractions = torch.tensor([[0.7, 0.2, 0.1]])
    p = np.exp([2.0, 0.0, -1.0]) / np.exp([2.0, 0.0, -1.0]).sum()
    expected = -(0.7 * np.log(p[0]) + 0.2 * np.log(p[1]) + 0.1 * np.log(p[2]))
    assert soft_cross_entropy(logits, fractions).item() == pytest.approx(expected, rel=1e-6)


def test_classifier_learns_soft_vote_fractions():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 4))
    featured = 1.0 / (1.0 + np.exp(-4.0 * x[:, 0]))  # the fraction voting "featured" follows feature 0
    fractions = np.stack([1.0 - featured, featured], axis=1)
    protocol = MorphologyProtocol(epochs=10, batch_size=50, hidden=64)
    scaler, model = train_classifier(x[:300], fractions[:300], protocol, seed=0)
    predicted = predict_probabilities(scaler, model, x[300:])
    assert accuracy(fractions[300:], predicted) > 0.9
    assert np.abs(predicted[:, 1] - featured[300:]).mean() < 0.12  # soft targets give calibrated fractions


def test_metrics_table_reads_the_predictions():
    predictions = pd.DataFrame({
        "features": "f", "question": "disk-edge-on", "TARGETID": np.arange(4), "p_yes": [0.9, 0.2, 0.4, 0.8],
        "p_no": [0.1, 0.8, 0.6, 0.2], "true": ["yes", "no", "no", "no"], "predicted": ["yes", "no", "no", "yes"],
        "n_train": 10,
    })  # fmt: skip
    row = morphology_metrics(predictions).iloc[0]
    assert (row.n_test, row.n_train) == (4, 10)
    assert row.accuracy == pytest.approx(0.75) and row.majority_rate == pytest.approx(0.75)


def test_cross_match_within_radius_and_reader(tmp_path, votes):
    catalogue = votes.iloc[:3].copy()
    offset = np.array([0.3, 0.7, 0.0]) / 3600.0
    ra = catalogue.ra.to_numpy() + offset / np.cos(np.radians(catalogue.dec.to_numpy()))
    index, separation = cross_match(ra, catalogue.dec.to_numpy(), catalogue, radius_arcsec=0.5)
    np.testing.assert_array_equal(index, [0, -1, 2])
    np.testing.assert_allclose(separation, [0.3, 0.7, 0.0], atol=1e-3)
    labels = match_labels(ra, catalogue.dec.to_numpy(), catalogue, 0.5)
    assert labels.matched.tolist() == [True, False, True]
    assert np.isnan(labels.loc[1, "bar_no_debiased"])
    path = tmp_path / "gz_decals_volunteers_5.csv"
    catalogue.to_csv(path, index=False)
    pd.testing.assert_frame_equal(read_volunteer_catalogue(path), catalogue.reset_index(drop=True), check_dtype=False)
    catalogue.drop(columns=["bar_weak_debiased"]).to_csv(path, index=False)
    with pytest.raises(ValueError, match="gz_decals_volunteers_5.csv.*bar_weak_debiased"):
        read_volunteer_catalogue(path)


def _real_layout(votes: pd.DataFrame) -> bytes:
    """The votes as gz_decals_volunteers_5.csv lays them out: the catalogue's other columns around ours."""
    table = votes.copy()
    extra = {"redshift": 0.05, "elpetro_absmag_r": -21.0, "sersic_nmgy_r": 80.0, "petro_th50": 4.0, "petro_th90": 9.0,
             "petro_theta": 8.0, "upload_group": "dr5_pre_al", "active_learning_running": False}  # fmt: skip
    for i, (name, value) in enumerate(extra.items()):
        table.insert(3 + i, name, value)
    table["wrong_size_statistic"] = 0.1
    table["wrong_size_warning"] = False
    return table.to_csv(index=False).encode()


def test_catalogue_downloads_through_the_fetcher_and_cross_matches(votes, population, tmp_path):
    """The download rule's path: the polite fetcher (resuming after a dropped connection), the
    catalogue check, the reader and the sky match, against a loopback-served file in the real layout."""
    data = _real_layout(votes.iloc[:200])
    fetcher = Fetcher(max_workers=1, requests_per_second=None, retry=RetryPolicy(attempts=3), sleep=lambda s: None)
    with LoopbackServer() as server:
        url = server.add_file(f"records/4573248/files/{CATALOGUE_NAME}", data)
        server.inject("files", Fault("drop"), Fault("status", 503))
        path = fetcher.download_file(url, tmp_path / CATALOGUE_NAME, validate_file=validate_volunteer_catalogue,
                                     chunk_size=4096, progress=False)  # fmt: skip
        assert path.read_bytes() == data
        assert server.requests[-1].headers["Range"].startswith("bytes=")  # resumed, not restarted
        not_a_catalogue = server.add_file("error.html", b"<html>Service unavailable</html>\n")
        with pytest.raises(DownloadError, match="does not validate.*not a GZ DECaLS volunteer catalogue"):
            fetcher.download_file(not_a_catalogue, tmp_path / "other.csv", validate_file=validate_volunteer_catalogue,
                                  progress=False)  # fmt: skip
        assert not (tmp_path / "other.csv").exists()
    catalogue = read_volunteer_catalogue(path)
    assert list(catalogue.columns) == catalogue_columns()
    # The survey's positions (the truth) find their own Galaxy Zoo rows, 0.1" of astrometric scatter apart.
    labels = match_labels(population.RA.to_numpy()[:300], population.DEC.to_numpy()[:300], catalogue, 0.5)
    assert labels.matched.iloc[:200].all() and not labels.matched.iloc[200:].any()
    assert labels.separation_arcsec.max() < 0.5
    np.testing.assert_allclose(labels["bar_no_debiased"].iloc[:200], votes["bar_no_debiased"].iloc[:200])


def test_adaptive_moments_measure_axis_ratio_and_size_and_flag_failures():
    """Noise-free exponential disks of known shape through a Gaussian PSF; an empty cutout fails."""
    psf = galsim.Gaussian(sigma=1.0)
    shapes = [(3.0, 0.3), (3.0, 0.9), (6.0, 0.5)]  # (half-light radius in pixels, axis ratio)
    images = [
        galsim.Convolve(galsim.Exponential(half_light_radius=r).shear(q=q, beta=30.0 * galsim.degrees), psf)
        .drawImage(nx=64, ny=64, scale=1.0)
        .array
        for r, q in shapes
    ]
    moments = adaptive_moments(np.stack(images + [np.zeros((64, 64))]))
    expected = [galsim.hsm.FindAdaptiveMom(galsim.Image(image)).observed_shape.q for image in images]
    assert moments[:3, 0] == pytest.approx(expected, abs=1e-6)
    assert moments[0, 0] < 0.5 < moments[2, 0] < moments[1, 0]  # the seeing rounds the small thin disk
    assert moments[2, 1] > moments[0, 1]  # log σ grows with the disk
    assert moments[:, 2].tolist() == [1.0, 1.0, 1.0, 0.0]
    assert moments[3, 0] == 1.0 and moments[3, 1] == pytest.approx(np.median(moments[:3, 1]))


def test_morphology_features_refuse_rows_of_other_galaxies():
    ids = np.array([5, 7])
    magnitudes = {m: np.ones(2) for m in ("MAG_G", "MAG_R", "MAG_Z")}
    embeddings = {"TARGETID": ids, "image_embedding": np.zeros((2, 4))} | magnitudes
    backbone = {"TARGETID": ids, "image": np.zeros((2, 3))}
    moments = {"TARGETID": ids[::-1], "moments": np.zeros((2, 3))}
    with pytest.raises(ValueError, match="adaptive moments hold different galaxies"):
        morphology_features(embeddings, backbone, moments)
    features = morphology_features(embeddings, backbone, moments | {"TARGETID": ids})
    assert features[MOMENTS_FEATURES].shape == (2, 6)
