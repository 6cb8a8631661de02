"""Simulated Galaxy Zoo DECaLS volunteers classifying the mock survey's cutouts.

Each galaxy gets a number of volunteers like GZD-5's (most about 40, those retired early by
active learning about 5, a few fewer than 3), and every volunteer walks the decision tree: the
volunteers who give an answer are the ones asked the questions that follow it, so the counts obey
the tree exactly (``{question}_total-votes`` = the count of the answer it depends on).

What a volunteer answers is drawn from a confusion model: the true answer (``morphology.py``)
with probability set by a per-question matrix (ordered answers are confused with their
neighbours), and, for structure that a small galaxy hides, a "blind" answer distribution mixed in
as the galaxy shrinks towards the seeing: a disk of half-light radius equal to the PSF FWHM keeps
63% of its visibility. The catalogue's ``_debiased`` fractions undo the volunteers' confusion (the
fractions times the inverse of the full-visibility matrix, clipped at zero and renormalised); the
real catalogue's debiasing also corrects the loss of detail with redshift, which ours leaves in.
"""

import numpy as np
import pandas as pd

from ..galaxy_zoo import DEPENDENCIES, QUESTIONS, catalogue_columns, iau_name, total_column
from .morphology import BAR_KINDS, MERGER_KINDS, bulge_light_fraction, bulge_size, roundness, winding

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


def _answer_probabilities(galaxies: pd.DataFrame, psf_fwhm: float) -> dict[str, np.ndarray]:
    """(n, n_answers) per question: v · C[true answer] + (1 - v) · blind, for each galaxy."""
    truth = true_answers(galaxies)
    confusion = confusion_matrices()
    blind = _blind_answers()
    seen = visibility(galaxies.RE_DISK.to_numpy(), psf_fwhm)[:, None]
    probabilities = {}
    for question, answers in truth.items():
        p = confusion[question][answers]
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
