"""The AstroCLIP v2 headline table: redshift R², properties R² (mean of four) and morphology accuracy.

Rows as the official README lays them out, each with its published value (DESI) beside ours and,
below the headline columns, the per-property breakdown. Ours come from the v2-protocol rows of the
R² table (zero-shot k-NN on standardised features for the embeddings and the encoders alone, the
few-shot MLP for photometry, the supervised baselines' own rows for ResNet18 and Conv+Att) and
from the morphology metrics (accuracy averaged over the questions).
A row we do not run says why in its note, rather than leaving blanks.
"""

import numpy as np
import pandas as pd

from ..files import atomic_path
from .property_prediction import PHYSICAL_PROPERTIES, SUPERVISED, V2_SUFFIX

_PROPERTIES = "R2 properties (mean of 4)"
_STEIN_NOTE = "not a row of its own: with their weights (image_encoder.weights) the image encoder row is theirs"
#: (row, our property-table method, our morphology feature set, published z, properties, morphology, note).
ROWS = [
    ("AstroCLIP image embedding", "image embedding + k-NN", "AstroCLIP image embedding", 0.79, 0.47, 0.76, ""),
    (
        "image encoder alone (AstroDINO; ours: the backbone before alignment)",
        "image backbone before alignment + k-NN",
        "image backbone before alignment",
        0.63,
        0.37,
        0.78,
        "",
    ),
    ("Stein et al. 2021 ResNet", None, None, 0.36, 0.26, 0.76, _STEIN_NOTE),
    ("ResNet18, supervised", SUPERVISED["resnet18"], None, 0.77, 0.43, np.nan, ""),
    ("ZooBot, supervised", None, None, np.nan, np.nan, 0.88, "not run: a Galaxy Zoo model, outside this workflow"),
    ("AstroCLIP spectrum embedding", "spectrum embedding + k-NN", None, 0.99, 0.63, np.nan, ""),
    ("spectrum encoder alone", "spectrum transformer before alignment + k-NN", None, 0.99, 0.64, np.nan, ""),
    ("Conv+Att, supervised", SUPERVISED["conv_att"], None, 0.99, 0.60, np.nan, ""),
    ("photometry MLP", "photometry + MLP", "photometry (g, r, z magnitudes)", 0.68, 0.42, np.nan, ""),
]


def headline_table(r2: pd.DataFrame, morphology: pd.DataFrame | None) -> pd.DataFrame:
    """The headline rows from the R² table (``property_prediction.r2_table``, with v2 rows) and the
    morphology metrics (``morphology.morphology_metrics``, None where there are no labels).

    Raises:
        ValueError: when the R² table has no v2-protocol rows (config key evaluation.protocols).
    """
    r2 = r2.set_index("method")
    if not r2.index.str.endswith(V2_SUFFIX).any():
        raise ValueError("the R² table has no v2-protocol rows: add v2 to the config key 'evaluation.protocols'")
    accuracy = morphology.groupby("features")["accuracy"].mean() if morphology is not None else pd.Series(dtype=float)
    rows = []
    for name, method, features, z_pub, properties_pub, morphology_pub, note in ROWS:
        # the supervised baselines follow no k-NN protocol: their rows carry no suffix
        key = None if method is None else method if method in SUPERVISED.values() else method + V2_SUFFIX
        ours = r2.loc[key] if key in r2.index else None
        row = {
            "model": name,
            "redshift R2": ours["R2 Z_HP"] if ours is not None else np.nan,
            "redshift R2, published": z_pub,
            "properties R2": ours.get(_PROPERTIES, np.nan) if ours is not None else np.nan,
            "properties R2, published": properties_pub,
            "morphology accuracy": accuracy.get(features, np.nan) if features else np.nan,
            "morphology accuracy, published": morphology_pub,
        }
        for target in PHYSICAL_PROPERTIES:
            row[f"R2 {target}"] = ours.get(f"R2 {target}", np.nan) if ours is not None else np.nan
        notes = [note] if note else []
        if ours is None and method in SUPERVISED.values():
            notes.append("not run: the config key baselines.enabled is false")
        if ours is not None and np.isnan(row["properties R2"]):
            notes.append("properties: the catalogue lacks some of the four (PROVABGS gives stellar mass only)")
        if ours is not None and morphology is None and features:
            notes.append("morphology: no Galaxy Zoo labels for this source")
        row["note"] = "; ".join(notes)
        rows.append(row)
    return pd.DataFrame(rows)


def headline_summary(table: pd.DataFrame) -> pd.DataFrame:
    """The headline columns as "ours / published" text, narrow enough for the report's top page;
    "–" where a value does not exist (a row not run, a number not published)."""

    def pair(ours: float, published: float) -> str:
        return " / ".join("–" if np.isnan(v) else f"{v:.2f}" for v in (ours, published))

    summary = pd.DataFrame({"model": table["model"]})
    for column in ("redshift R2", "properties R2", "morphology accuracy"):
        summary[f"{column} (ours / published)"] = [
            pair(o, p) for o, p in zip(table[column], table[f"{column}, published"], strict=True)
        ]
    return summary


def write_headline_table(r2_path, morphology_path, output, summary_output) -> None:
    morphology = pd.read_csv(morphology_path) if morphology_path else None
    table = headline_table(pd.read_csv(r2_path), morphology)
    with atomic_path(output) as tmp:
        table.to_csv(tmp, index=False, float_format="%.2f")
    with atomic_path(summary_output) as tmp:
        headline_summary(table).to_csv(tmp, index=False)
