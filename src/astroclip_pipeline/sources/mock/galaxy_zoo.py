"""Simulated Galaxy Zoo DECaLS volunteers classifying the mock survey's cutouts.

Each galaxy gets a number of volunteers like GZD-5's (most about 40, those retired early by
active learning about 5, a few fewer than 3), and every volunteer walks the decision tree: the
volunteers who give an answer are the ones asked the questions that follow it, so the counts obey
the tree exactly (``{question}_total-votes`` = the count of the answer it depends on).

What a volunteer answers is drawn from a confusion model: the true answer (``morphology.py``)
with probability set by a per-question matrix (ordered answers are confused with their
neighbours), and, for structure that a small galaxy hides, a "blind" answer distribution mixed in
as the galaxy shrinks towards the seeing: a disk of half-light radius equal to the PSF FWHM keeps
63% of its visibility. Questions about shape (is the disk edge-on, how round is a smooth galaxy)
are answered from the shape the volunteers see: the axis ratio of the galaxy seen through the
seeing (``apparent_axis_ratio``), not the intrinsic one, since a thin disk smaller than the PSF
looks round and nobody calls it edge-on. The catalogue's ``_debiased`` fractions undo the
volunteers' confusion (the fractions times the inverse of the full-visibility matrix, clipped at
zero and renormalised); the real catalogue's debiasing also corrects the loss of detail with
redshift, which ours leaves in.
"""

from functools import cache
from pathlib import Path

import galsim
import numpy as np
import pandas as pd
from scipy.interpolate import RegularGridInterpolator

from ...files import atomic_path
from ..galaxy_zoo import DEPENDENCIES, QUESTIONS, catalogue_columns, iau_name, total_column
from .images import MOFFAT_BETA, PIXEL_SCALE
from .morphology import BAR_KINDS, MERGER_KINDS, bulge_light_fraction, bulge_size, roundness, winding
from .survey import STAGE_GALAXY_ZOO, MockSurveySpec, stage_rng

#: A disk looks edge-on to a volunteer when its apparent axis ratio is below about 0.4 (about 2.5
#: times longer than wide: a large disk at the truth's 75° boundary, intrinsic q 0.32, looks 0.33;
#: a 1" one, through 1.3" seeing, 0.5); the change from "no" to "yes" takes about ±0.05 in q.
EDGE_ON_LOOKS_Q = 0.4
EDGE_ON_LOOKS_WIDTH = 0.05
#: The grid of the apparent-axis-ratio table: half-light radius in PSF FWHMs, intrinsic q.
_RADIUS_IN_FWHM = np.geomspace(0.05, 5.0, 25)
_INTRINSIC_Q = np.linspace(0.1, 1.0, 10)

#: Astrometric scatter between the survey and the GZ catalogue positions (arcsec, per axis).
POSITION_SCATTER_ARCSEC = 0.1


def _ordinal(n: int, sigma: float) -> np.ndarray:
    """Row-stochastic confusion of ordered answers: a Gaussian kernel of width sigma in answer steps."""
    steps = np.arange(n)
    kernel = np.exp(-0.5 * ((steps[:, None] - steps[None, :]) / sigma) ** 2)
    return kernel / kernel.sum(axis=1, keepdims=True)


def _diagonal(n: int, correct: float) -> np.ndarray:
    matrix = np.full((n, n), (1.0 - correct) / (n - 1))
    np.fill_diagonal(matrix, correct)
    return matrix


def confusion_matrices() -> dict[str, np.ndarray]:
    """P(answer | true answer) per question at full visibility, rows and columns in QUESTIONS order."""
    arm_count = _ordinal(6, 0.6)
    arm_count[:, :5] *= 0.9  # "can't tell" is always tempting
    arm_count[:, 5] = 0.1
    arm_count[5] = np.array([0.1, 0.2, 0.1, 0.05, 0.05, 0.5])
    return {
        "smooth-or-featured": np.array([[0.9, 0.08, 0.02], [0.08, 0.9, 0.02], [0.35, 0.1, 0.55]]),
        "disk-edge-on": _diagonal(2, 0.92),
        "has-spiral-arms": _diagonal(2, 0.88),
        "bar": _ordinal(3, 0.5),
        "bulge-size": _ordinal(5, 0.6),
        "how-rounded": _ordinal(3, 0.45),
        "edge-on-bulge": _diagonal(3, 0.7),
        "spiral-winding": _ordinal(3, 0.7),
        "spiral-arm-count": arm_count,
        "merging": _ordinal(4, 0.45),
    }


def _index(question: str, answers: np.ndarray) -> np.ndarray:
    order = {a: i for i, a in enumerate(QUESTIONS[question])}
    return np.array([order[a] for a in answers])


def true_answers(galaxies: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per question, the index of the answer a volunteer who saw perfectly would give."""
    bulge_light = bulge_light_fraction(galaxies)
    artefact = galaxies.ARTEFACT.to_numpy() > 0
    sof = np.where(artefact, "artifact", np.where(galaxies.FEATURED, "featured-or-disk", "smooth"))
    arms = galaxies.ARMS.to_numpy()
    count = np.where(arms >= 5, "more-than-4", np.where(arms > 0, arms.astype(str), "cant-tell"))
    barred = galaxies.BAR.to_numpy() > 0
    edge_on_bulge = np.where(bulge_light < 0.05, "none", np.where(barred, "boxy", "rounded"))
    return {
        "smooth-or-featured": _index("smooth-or-featured", sof),
        "disk-edge-on": _index("disk-edge-on", np.where(galaxies.EDGE_ON, "yes", "no")),
        "has-spiral-arms": _index("has-spiral-arms", np.where(arms > 0, "yes", "no")),
        "bar": _index("bar", np.asarray(BAR_KINDS)[galaxies.BAR.to_numpy()]),
        "bulge-size": _index("bulge-size", bulge_size(bulge_light)),
        "how-rounded": _index("how-rounded", roundness(galaxies.Q_BULGE.to_numpy())),
        "edge-on-bulge": _index("edge-on-bulge", edge_on_bulge),
        "spiral-winding": _index("spiral-winding", winding(galaxies.PITCH.to_numpy())),
        "spiral-arm-count": _index("spiral-arm-count", count),
        "merging": _index("merging", np.asarray(MERGER_KINDS)[galaxies.MERGER.to_numpy()]),
    }


def _blind_answers() -> dict[str, np.ndarray]:
    """What volunteers answer about structure they cannot see: smooth, no arms, no bar..."""
    blind = {q: None for q in QUESTIONS}
    blind["smooth-or-featured"] = np.array([0.85, 0.13, 0.02])
    blind["has-spiral-arms"] = np.array([0.15, 0.85])
    blind["bar"] = np.array([0.03, 0.12, 0.85])
    blind["spiral-winding"] = np.array([0.3, 0.4, 0.3])
    blind["spiral-arm-count"] = np.array([0.05, 0.15, 0.05, 0.02, 0.03, 0.7])
    blind["merging"] = np.array([0.9, 0.08, 0.01, 0.01])
    return blind


def visibility(half_light_arcsec: np.ndarray, psf_fwhm: float) -> np.ndarray:
    """0-1: how much of a disk's structure the seeing leaves visible, 1 - exp(-(R_e / FWHM)²)."""
    return 1.0 - np.exp(-((np.asarray(half_light_arcsec) / psf_fwhm) ** 2))


@cache
def _apparent_q_table(profile: str, psf_fwhm: float) -> RegularGridInterpolator:
    """Apparent axis ratio on the grid (log radius in FWHMs, intrinsic q), from noise-free GalSim
    images on the survey's pixels measured by adaptive moments. A table because adaptive moments do
    not add under convolution (a cuspy de Vaucouleurs bulge stays rounder than second moments would say)."""
    psf = galsim.Moffat(beta=MOFFAT_BETA, fwhm=psf_fwhm)
    shape = galsim.Exponential if profile == "exponential" else galsim.DeVaucouleurs
    table = np.empty((len(_RADIUS_IN_FWHM), len(_INTRINSIC_Q)))
    for i, radius in enumerate(_RADIUS_IN_FWHM * psf_fwhm):
        size = max(64, int(8 * (radius + psf_fwhm) / PIXEL_SCALE))  # the Gaussian weight's reach, and more
        guess = np.hypot(0.7 * radius, psf_fwhm / 2.355) / PIXEL_SCALE  # σ in pixels, roughly: HSM's start
        for j, q in enumerate(_INTRINSIC_Q):
            galaxy = galsim.Convolve(shape(half_light_radius=radius).shear(q=q, beta=0.0 * galsim.degrees), psf)
            image = galaxy.drawImage(nx=size, ny=size, scale=PIXEL_SCALE)
            table[i, j] = galsim.hsm.FindAdaptiveMom(image, guess_sig=guess).observed_shape.q
    return RegularGridInterpolator((np.log(_RADIUS_IN_FWHM), _INTRINSIC_Q), table)


def apparent_axis_ratio(half_light_arcsec, q, psf_fwhm: float, profile: str = "exponential") -> np.ndarray:
    """Axis ratio (minor / major, 0-1) of a galaxy as seen through the survey's seeing.

    The adaptive-moment axis ratio (GalSim HSM, as ``galsim.hsm.FindAdaptiveMom``) of a noise-free
    ``profile`` ("exponential" disk or "devaucouleurs" bulge) of half-light radius
    ``half_light_arcsec`` and intrinsic axis ratio ``q``, convolved with the mock's Moffat PSF of
    FWHM ``psf_fwhm`` (arcsec) and sampled on the survey's 0.262" pixels; interpolated in a table,
    radii clipped to 0.05-5 FWHM (beyond, the seeing hardly rounds a galaxy).
    """
    table = _apparent_q_table(profile, float(psf_fwhm))
    radius = np.clip(np.asarray(half_light_arcsec, dtype=float) / psf_fwhm, _RADIUS_IN_FWHM[0], _RADIUS_IN_FWHM[-1])
    q = np.clip(np.asarray(q, dtype=float), _INTRINSIC_Q[0], 1.0)
    return table(np.stack([np.log(radius), q], axis=-1))


def looks_edge_on(galaxies: pd.DataFrame, psf_fwhm: float) -> np.ndarray:
    """0-1 per galaxy: how clearly its disk looks edge-on, from the disk's apparent axis ratio."""
    q_seen = apparent_axis_ratio(galaxies.RE_DISK, galaxies.Q_DISK, psf_fwhm)
    return 1.0 / (1.0 + np.exp((q_seen - EDGE_ON_LOOKS_Q) / EDGE_ON_LOOKS_WIDTH))


def apparent_roundness(galaxies: pd.DataFrame, psf_fwhm: float) -> np.ndarray:
    """GZ's how-rounded answer of the axis ratio a galaxy shows through the seeing: its bulge's and
    its disk's apparent axis ratios weighted by their share of the r-band light."""
    bulge_light = bulge_light_fraction(galaxies)
    bulge = apparent_axis_ratio(galaxies.RE_BULGE, galaxies.Q_BULGE, psf_fwhm, profile="devaucouleurs")
    disk = apparent_axis_ratio(galaxies.RE_DISK, galaxies.Q_DISK, psf_fwhm)
    return roundness(bulge_light * bulge + (1.0 - bulge_light) * disk)


def _answer_probabilities(galaxies: pd.DataFrame, psf_fwhm: float) -> dict[str, np.ndarray]:
    """(n, n_answers) per question: v · C[true answer] + (1 - v) · blind, for each galaxy; for the
    questions about shape, C applied to the answer the apparent shape gives."""
    truth = true_answers(galaxies)
    truth["how-rounded"] = _index("how-rounded", apparent_roundness(galaxies, psf_fwhm))
    confusion = confusion_matrices()
    blind = _blind_answers()
    seen = visibility(galaxies.RE_DISK.to_numpy(), psf_fwhm)[:, None]
    edge_on = looks_edge_on(galaxies, psf_fwhm)[:, None]
    probabilities = {}
    for question, answers in truth.items():
        p = confusion[question][answers]
        if question == "disk-edge-on":
            yes, no = (QUESTIONS[question].index(a) for a in ("yes", "no"))
            p = edge_on * confusion[question][yes] + (1.0 - edge_on) * confusion[question][no]
        if blind[question] is not None:
            keep = seen
            if question == "smooth-or-featured":  # an artefact or a smooth galaxy is never hidden
                keep = np.where((answers == 1)[:, None], seen, 1.0)
            p = keep * p + (1.0 - keep) * blind[question]
        probabilities[question] = p / p.sum(axis=1, keepdims=True)
    return probabilities


def _draw_volunteers(rng: np.random.Generator, n: int) -> np.ndarray:
    """GZD-5-like totals: ~40 for most galaxies, ~5 for those retired early, a few under 3."""
    kind = rng.choice(3, size=n, p=[0.75, 0.2, 0.05])
    return np.select([kind == 0, kind == 1], [rng.poisson(40, n), 3 + rng.poisson(3, n)], 1 + rng.poisson(0.8, n))


def simulate_votes(galaxies: pd.DataFrame, rng: np.random.Generator, psf_fwhm: float) -> pd.DataFrame:
    """The GZD-5 volunteer catalogue of these galaxies (columns of ``galaxy_zoo.catalogue_columns``).

    ``galaxies`` carries RA, DEC (deg), the morphology truth, RE_DISK, the bulge and total r
    fluxes and ARTEFACT. Fractions are NaN where a question got no votes, as in the catalogue.
    """
    n = len(galaxies)
    probabilities = _answer_probabilities(galaxies, psf_fwhm)
    scatter = rng.normal(0.0, POSITION_SCATTER_ARCSEC / 3600.0, (2, n))
    ra = galaxies.RA.to_numpy() + scatter[0] / np.cos(np.radians(galaxies.DEC.to_numpy()))
    dec = galaxies.DEC.to_numpy() + scatter[1]
    columns: dict[str, np.ndarray] = {"iauname": iau_name(ra, dec), "ra": ra, "dec": dec}
    counts: dict[str, np.ndarray] = {}
    confusion_inverse = {q: np.linalg.inv(c) for q, c in confusion_matrices().items()}
    for question, answers in QUESTIONS.items():  # parents come before children in QUESTIONS
        parents = DEPENDENCIES[question]
        total = _draw_volunteers(rng, n) if parents is None else sum(counts[p] for p in parents)
        votes = rng.multinomial(total, probabilities[question])
        with np.errstate(invalid="ignore", divide="ignore"):
            fraction = votes / total[:, None]
            debiased = np.clip(fraction @ confusion_inverse[question], 0.0, None)
            debiased /= debiased.sum(axis=1, keepdims=True)
        columns[total_column(question)] = total
        for i, answer in enumerate(answers):
            counts[f"{question}_{answer}"] = votes[:, i]
            columns[f"{question}_{answer}"] = votes[:, i]
            columns[f"{question}_{answer}_fraction"] = fraction[:, i]
            columns[f"{question}_{answer}_debiased"] = debiased[:, i]
    return pd.DataFrame(columns)[catalogue_columns()]


def write_galaxy_zoo(spec: MockSurveySpec, galaxies_path: str | Path, output: str | Path) -> None:
    """Simulated GZD-5 volunteer votes on every mock galaxy, as ``gz_decals_volunteers_5.csv``.

    Here rather than in ``survey.py`` so that the survey's own stages (targets, spectra, cutouts)
    do not import this module and are not rerun when only the volunteers' model changes.
    """
    galaxies = pd.read_parquet(galaxies_path)
    votes = simulate_votes(galaxies, stage_rng(spec.seed, STAGE_GALAXY_ZOO), spec.psf_fwhm)
    with atomic_path(output) as tmp:
        votes.to_csv(tmp, index=False)
