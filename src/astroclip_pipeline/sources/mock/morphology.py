"""The visible morphology of the mock galaxies: the truth the Galaxy Zoo questions ask about.

Drawn from each galaxy's bulge-disk decomposition and star formation, in the terms of the
Galaxy Zoo DECaLS (GZD-5) decision tree (Walmsley et al. 2022, MNRAS 509, 3966):

- featured (a visible disk or structure) or smooth: a star-forming galaxy is featured when its
  disk gives more than 40% of its r-band light, a quiescent one (an S0) when more than 70%;
- inclination from the disk's axis ratio, for an oblate disk of intrinsic thickness 0.2
  (cos² i = (q² - 0.2²) / (1 - 0.2²)); edge-on above 75°;
- spiral arms (most star-forming disks, few quiescent ones): 1-6 arms, logarithmic spirals of
  pitch angle 8-35° (tight below 15°, loose above 25°, as GZ's winding question splits them);
- bars in about a third of disks (strong or weak: more or less of the disk's light in the bar);
- bulge size from the bulge's share of the r-band light; roundness of smooth galaxies from their
  axis ratio (elliptical galaxies' q distribution peaks near 0.75);
- minor and major disturbances (a tidal tail) and mergers (a companion and a bridge of light).

The rendering (``images.py``) draws every item here into the cutouts. All columns are new:
the population's other draws are unchanged by this module.
"""

import numpy as np
import pandas as pd

#: Answers of the truth columns, in the order of their integer codes.
BAR_KINDS = ("no", "weak", "strong")
MERGER_KINDS = ("none", "minor-disturbance", "major-disturbance", "merger")
#: Intrinsic thickness of a disk (the axis ratio of an exactly edge-on one).
DISK_THICKNESS = 0.2
EDGE_ON_INCLINATION = 75.0
#: Probability of 1, 2, 3, 4 and more than 4 (drawn as 5 or 6) arms, for a spiral.
_ARM_COUNTS = np.array([1, 2, 3, 4, 5, 6])
_ARM_COUNT_P = np.array([0.06, 0.50, 0.20, 0.12, 0.08, 0.04])
_BAR_P = np.array([0.65, 0.20, 0.15])
_MERGER_P = np.array([0.86, 0.06, 0.04, 0.04])
#: Fraction of the disk's light in the bar, by BAR_KINDS.
BAR_LIGHT = np.array([0.0, 0.08, 0.2])
#: Fraction of the galaxy's light in the tidal tail (minor, major disturbance; merger bridge).
TAIL_LIGHT = np.array([0.0, 0.06, 0.15, 0.1])


def inclination_deg(q_disk: np.ndarray) -> np.ndarray:
    """Inclination (0 face-on, 90 edge-on) of a disk of thickness ``DISK_THICKNESS`` seen with axis ratio q."""
    q = np.clip(np.asarray(q_disk, dtype=float), DISK_THICKNESS, 1.0)
    cos2 = (q**2 - DISK_THICKNESS**2) / (1.0 - DISK_THICKNESS**2)
    return np.degrees(np.arccos(np.sqrt(cos2)))


def bulge_light_fraction(galaxies: pd.DataFrame) -> np.ndarray:
    """The bulge's share of the r-band light (B/T), the quantity GZ's bulge-size question judges."""
    return (galaxies.FLUX_BULGE_R / galaxies.FLUX_R).to_numpy()


def draw_morphology(galaxies: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """Morphology truth of each galaxy, and the axis ratios of smooth galaxies redrawn.

    Reads QUIESCENT, FLUX_BULGE_R, FLUX_R, Q_DISK. Returns columns FEATURED (bool), INCLINATION
    (deg), EDGE_ON (bool), ARMS (0 = none), PITCH (deg), ARM_PHASE (rad), BAR (index into
    BAR_KINDS), BAR_ANGLE (deg, in the disk plane), MERGER (index into MERGER_KINDS), and for the
    tail and the companion TAIL_ANGLE (deg), COMPANION_SEPARATION (in disk half-light radii),
    COMPANION_ANGLE (deg), COMPANION_FLUX_RATIO; Q_SMOOTH is the axis ratio a smooth galaxy is
    drawn with (both components).
    """
    n = len(galaxies)
    quiescent = galaxies.QUIESCENT.to_numpy()
    bulge_light = bulge_light_fraction(galaxies)
    featured = bulge_light < np.where(quiescent, 0.3, 0.6)
    inclination = inclination_deg(galaxies.Q_DISK.to_numpy())
    spiral = featured & (rng.uniform(size=n) < np.where(quiescent, 0.2, 0.85))
    arms = np.where(spiral, rng.choice(_ARM_COUNTS, size=n, p=_ARM_COUNT_P), 0)
    bar = np.where(featured, rng.choice(len(BAR_KINDS), size=n, p=_BAR_P), 0)
    merger = rng.choice(len(MERGER_KINDS), size=n, p=_MERGER_P)
    return pd.DataFrame(
        {
            "FEATURED": featured,
            "INCLINATION": inclination,
            "EDGE_ON": featured & (inclination > EDGE_ON_INCLINATION),
            "ARMS": arms,
            "PITCH": rng.uniform(8.0, 35.0, n),
            "ARM_PHASE": rng.uniform(0.0, 2.0 * np.pi, n),
            "BAR": bar,
            "BAR_ANGLE": rng.uniform(0.0, 180.0, n),
            "MERGER": merger,
            "TAIL_ANGLE": rng.uniform(0.0, 360.0, n),
            "COMPANION_SEPARATION": rng.uniform(1.2, 2.5, n),
            "COMPANION_ANGLE": rng.uniform(0.0, 360.0, n),
            "COMPANION_FLUX_RATIO": rng.uniform(0.3, 1.0, n),
            # Elliptical galaxies' apparent axis ratios: a broad peak near 0.75, few below 0.4.
            "Q_SMOOTH": np.clip(rng.normal(0.72, 0.17, n), 0.3, 1.0),
        }
    )


def winding(pitch_deg: np.ndarray) -> np.ndarray:
    """GZ's spiral-winding answer of a pitch angle: tight below 15°, loose above 25°, else medium."""
    pitch = np.asarray(pitch_deg)
    return np.where(pitch < 15.0, "tight", np.where(pitch > 25.0, "loose", "medium"))


def bulge_size(bulge_light: np.ndarray) -> np.ndarray:
    """GZ's bulge-size answer of a bulge-to-total light ratio."""
    edges = [0.03, 0.12, 0.25, 0.45]
    return np.asarray(["none", "small", "moderate", "large", "dominant"])[np.digitize(bulge_light, edges)]


def roundness(q: np.ndarray) -> np.ndarray:
    """GZ's how-rounded answer of a smooth galaxy's axis ratio."""
    q = np.asarray(q)
    return np.where(q > 0.8, "round", np.where(q < 0.5, "cigar-shaped", "in-between"))


def morphology_label(galaxies: pd.DataFrame) -> np.ndarray:
    """One word per galaxy for galleries: merger, disturbed, edge-on disk, barred spiral, spiral,
    barred disk, disk (featured, no arms nor bar) or smooth, the first that applies."""
    featured = galaxies.FEATURED.to_numpy()
    return np.select(
        [
            galaxies.MERGER.to_numpy() == MERGER_KINDS.index("merger"),
            galaxies.MERGER.to_numpy() > 0,
            galaxies.EDGE_ON.to_numpy(),
            featured & (galaxies.ARMS.to_numpy() > 0) & (galaxies.BAR.to_numpy() > 0),
            featured & (galaxies.ARMS.to_numpy() > 0),
            featured & (galaxies.BAR.to_numpy() > 0),
            featured,
        ],
        ["merger", "disturbed", "edge-on disk", "barred spiral", "spiral", "barred disk", "disk"],
        "smooth",
    )
