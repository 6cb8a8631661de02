"""Galaxy Zoo DECaLS (GZD-5) volunteer votes: the decision tree, the catalogue, the sky cross-match.

The catalogue is ``gz_decals_volunteers_5.csv`` of Walmsley et al. (2022, MNRAS 509, 3966; Zenodo
record 4573248): one row per galaxy keyed by ``iauname`` with ``ra``, ``dec`` (deg), and for each
of the ten questions ``{question}_total-votes`` and per answer ``{question}_{answer}`` (votes),
``{question}_{answer}_fraction`` and ``{question}_{answer}_debiased``. A question is only asked of
the volunteers who gave the answer it depends on (``DEPENDENCIES``), so its total equals that
answer's count.
"""

from pathlib import Path

import numpy as np
import pandas as pd
from astropy import units as u
from astropy.coordinates import SkyCoord

#: The ten GZD-5 questions and their 34 answers, in the catalogue's spelling and order.
QUESTIONS: dict[str, tuple[str, ...]] = {
    "smooth-or-featured": ("smooth", "featured-or-disk", "artifact"),
    "disk-edge-on": ("yes", "no"),
    "has-spiral-arms": ("yes", "no"),
    "bar": ("strong", "weak", "no"),
    "bulge-size": ("dominant", "large", "moderate", "small", "none"),
    "how-rounded": ("round", "in-between", "cigar-shaped"),
    "edge-on-bulge": ("boxy", "none", "rounded"),
    "spiral-winding": ("tight", "medium", "loose"),
    "spiral-arm-count": ("1", "2", "3", "4", "more-than-4", "cant-tell"),
    "merging": ("none", "minor-disturbance", "major-disturbance", "merger"),
}
#: The answer each question follows (None: asked of everyone), as the GZD-5 tree runs (Walmsley
#: et al. 2022, Fig. 4): bar, spiral arms and bulge size come after "not edge-on"; the merging
#: question closes every classification except one answered "artifact".
DEPENDENCIES: dict[str, tuple[str, ...] | None] = {
    "smooth-or-featured": None,
    "disk-edge-on": ("smooth-or-featured_featured-or-disk",),
    "has-spiral-arms": ("disk-edge-on_no",),
    "bar": ("disk-edge-on_no",),
    "bulge-size": ("disk-edge-on_no",),
    "how-rounded": ("smooth-or-featured_smooth",),
    "edge-on-bulge": ("disk-edge-on_yes",),
    "spiral-winding": ("has-spiral-arms_yes",),
    "spiral-arm-count": ("has-spiral-arms_yes",),
    "merging": ("smooth-or-featured_smooth", "smooth-or-featured_featured-or-disk"),
}
CATALOGUE_NAME = "gz_decals_volunteers_5.csv"


def total_column(question: str) -> str:
    return f"{question}_total-votes"


def answer_columns(question: str, suffix: str = "") -> list[str]:
    """``{question}_{answer}{suffix}`` for each answer; suffix "", "_fraction" or "_debiased"."""
    return [f"{question}_{answer}{suffix}" for answer in QUESTIONS[question]]


def catalogue_columns() -> list[str]:
    """The columns this project reads, in the catalogue's order."""
    columns = ["iauname", "ra", "dec"]
    for question in QUESTIONS:
        columns.append(total_column(question))
        for answer in QUESTIONS[question]:
            columns += [f"{question}_{answer}{s}" for s in ("", "_fraction", "_debiased")]
    return columns


def iau_name(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """IAU designations "JHHMMSS.ss+DDMMSS.s" of positions in degrees, as the catalogue's iauname."""
    coords = SkyCoord(np.asarray(ra) * u.deg, np.asarray(dec) * u.deg)
    ra_str = coords.ra.to_string(unit=u.hourangle, sep="", precision=2, pad=True)
    dec_str = coords.dec.to_string(sep="", precision=1, alwayssign=True, pad=True)
    return np.char.add("J", np.char.add(np.asarray(ra_str, dtype=str), np.asarray(dec_str, dtype=str)))


def validate_volunteer_catalogue(path: str | Path) -> None:
    """Refuse a file that is not a GZD-5 volunteer catalogue (CSV with ``catalogue_columns()``).

    Raises:
        ValueError: naming the file and the columns it lacks (another GZ release, say GZ2, spells
            its questions differently; an HTML error page has none of them).
    """
    try:
        header = pd.read_csv(path, nrows=0).columns
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: not a GZ DECaLS volunteer catalogue ({CATALOGUE_NAME}): {error}") from error
    missing = [c for c in catalogue_columns() if c not in header]
    if missing:
        raise ValueError(
            f"{path}: not a GZ DECaLS volunteer catalogue ({CATALOGUE_NAME}): "
            f"{len(missing)} expected columns are missing, e.g. {missing[:3]}"
        )


def read_volunteer_catalogue(path: str | Path) -> pd.DataFrame:
    """The columns of ``catalogue_columns()`` from a GZD-5 volunteer catalogue (CSV), in that order.

    Raises:
        ValueError: as ``validate_volunteer_catalogue``.
    """
    validate_volunteer_catalogue(path)
    return pd.read_csv(path, usecols=catalogue_columns())[catalogue_columns()]


def cross_match(
    ra: np.ndarray, dec: np.ndarray, catalogue: pd.DataFrame, radius_arcsec: float
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest catalogue row of each position (deg) within ``radius_arcsec``.

    Returns (index into ``catalogue`` or -1 where nothing is that close, separation in arcsec).
    astropy's ``match_to_catalog_sky`` (a k-d tree on the unit sphere) does the search.
    """
    ra = np.asarray(ra, dtype=float)
    if len(catalogue) == 0 or len(ra) == 0:
        return np.full(len(ra), -1), np.full(len(ra), np.inf)
    ours = SkyCoord(ra * u.deg, np.asarray(dec, dtype=float) * u.deg)
    theirs = SkyCoord(catalogue["ra"].to_numpy() * u.deg, catalogue["dec"].to_numpy() * u.deg)
    index, separation, _ = ours.match_to_catalog_sky(theirs)
    separation = separation.to_value(u.arcsec)
    return np.where(separation <= radius_arcsec, index, -1), separation
