"""The v2 headline table: ours beside the published values, from the R² table and the morphology metrics."""

import numpy as np
import pandas as pd
import pytest

from astroclip_pipeline.evaluate.headline import headline_summary, headline_table
from astroclip_pipeline.evaluate.property_prediction import V2_SUFFIX


def _r2_table() -> pd.DataFrame:
    methods = ["image embedding + k-NN", "spectrum embedding + k-NN", "photometry + MLP"]
    rows = []
    for i, method in enumerate(methods):
        for protocol, suffix, shift in (("v1", "", 0.5), ("v2", V2_SUFFIX, 0.0)):
            r2 = {"R2 Z_HP": 0.1 * (i + 1) + shift, "R2 LOGMSTAR": 0.2, "R2 SSFR": 0.4, "R2 AGE": 0.6, "R2 Z_MW": 0.8}
            rows.append({"method": method + suffix, "protocol": protocol, **r2, "R2 properties (mean of 4)": 0.5})
    return pd.DataFrame(rows)


def test_headline_rows_take_the_v2_rows_and_the_mean_morphology_accuracy():
    morphology = pd.DataFrame({
        "features": ["AstroCLIP image embedding"] * 2 + ["photometry (g, r, z magnitudes)"],
        "question": ["smooth-or-featured", "merging", "merging"], "accuracy": [0.9, 0.7, 0.6],
    })  # fmt: skip
    table = headline_table(_r2_table(), morphology).set_index("model")
    image = table.loc["AstroCLIP image embedding"]
    assert image["redshift R2"] == pytest.approx(0.1)  # the v2 row, not v1's 0.6
    assert image["redshift R2, published"] == 0.79 and image["properties R2"] == 0.5
    assert image["morphology accuracy"] == pytest.approx(0.8) and image["morphology accuracy, published"] == 0.76
    assert image["R2 AGE"] == 0.6
    assert table.loc["photometry MLP", "morphology accuracy"] == pytest.approx(0.6)
    assert table.loc["AstroCLIP spectrum embedding", "redshift R2"] == pytest.approx(0.2)
    # Rows not run are said to be, not left blank without a word.
    assert np.isnan(table.loc["Conv+Att, supervised", "redshift R2"])
    assert table.loc["Conv+Att, supervised", "note"].startswith("not run")
    first_of_each = ["AstroCLIP image embedding", "AstroCLIP spectrum embedding", "photometry MLP"]
    assert list(table.index[[0, 5, 8]]) == first_of_each
    summary = headline_summary(table.reset_index()).set_index("model")
    assert summary.loc["AstroCLIP image embedding", "morphology accuracy (ours / published)"] == "0.80 / 0.76"
    assert summary.loc["ZooBot, supervised", "redshift R2 (ours / published)"] == "– / –"


def test_headline_needs_v2_rows_and_says_when_there_are_no_labels():
    v1_only = _r2_table().query("protocol == 'v1'")
    with pytest.raises(ValueError, match="evaluation.protocols"):
        headline_table(v1_only, None)
    table = headline_table(_r2_table(), None).set_index("model")
    assert np.isnan(table.loc["AstroCLIP image embedding", "morphology accuracy"])
    assert "no Galaxy Zoo labels" in table.loc["AstroCLIP image embedding", "note"]


def test_headline_says_when_the_catalogue_lacks_properties():
    real = _r2_table().drop(columns=["R2 SSFR", "R2 AGE", "R2 Z_MW", "R2 properties (mean of 4)"])
    table = headline_table(real, None).set_index("model")
    assert np.isnan(table.loc["AstroCLIP spectrum embedding", "properties R2"])
    assert "stellar mass only" in table.loc["AstroCLIP spectrum embedding", "note"]
