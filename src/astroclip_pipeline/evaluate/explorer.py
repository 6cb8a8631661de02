"""The explorer: one self-contained HTML page to browse the embedding space, offline.

A UMAP map (image, spectrum or combined embeddings, switchable) of a subset of the held-out
galaxies, coloured by a property or a cluster label; hovering a point shows its cutout, z and M*.
Clicking a point (or typing a TARGETID) opens the galaxy: cutout, spectrum with the strong lines
marked at its redshift, catalogue values, and its top-k neighbours for the four query/answer pairs
(image->image, spectrum->spectrum, image->spectrum, spectrum->image), searched in the browser
among all galaxies on the page. A box or lasso selection shows a gallery of the selected galaxies.

The map and its widgets are Bokeh (standalone HTML with its JavaScript inline: no CDN, no server);
the galaxy panel is a small script of our own (``explorer.js`` beside this file), because Bokeh
has no widget for a list of neighbours with thumbnails and spectra. Everything the panel needs
travels in the page as one JSON block: embeddings as base64 float32 (the browser's top-k is then
computed from exactly the vectors numpy sees), spectra binned and quantised to int16 per galaxy
(the panel draws them; 0.003% of a spectrum's range is far below what a 300-pixel plot shows).
"""

from __future__ import annotations

import base64
import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image

from ..files import atomic_path
from ..sources.desi import rebin_spectra
from .overview import ABSORPTION_LINES, EMISSION_LINES
from .rgb import legacysurvey_rgb
from .search import PAIRS
from .structure import (
    MODALITIES,
    check_aligned,
    dataset_attrs,
    load_heldout,
    read_heldout_rows,
    read_umap_table,
)

log = logging.getLogger(__name__)

#: Catalogue columns shown in the hover and the galaxy panel, when the embedding files have them.
CATALOGUE_COLUMNS = ("Z_HP", "LOGMSTAR", "Z_MW", "AGE", "SSFR", "MAG_G", "MAG_R", "MAG_Z", "RA", "DEC")
#: Continuous columns the map can be coloured by.
COLOUR_COLUMNS = ("Z_HP", "LOGMSTAR", "Z_MW", "AGE", "SSFR", "MAG_R")
SCRIPT = Path(__file__).with_name("explorer.js")
STYLE = """
body { display: flex; gap: 24px; align-items: flex-start; font-family: sans-serif; margin: 12px; }
#explorer-panel { flex: 1 1 auto; min-width: 0; max-width: 900px; }
#explorer-panel .head { display: flex; gap: 16px; align-items: flex-start; }
#explorer-panel img.cutout { image-rendering: pixelated; border: 1px solid #ccc; }
#explorer-panel table.catalogue th { text-align: left; padding-right: 12px; font-weight: normal; color: #555; }
#explorer-panel section.pair ol {
  display: grid; grid-template-columns: repeat(auto-fill, minmax(360px, 1fr)); gap: 6px; padding-left: 24px;
}
#explorer-panel li.neighbour { display: flex; gap: 4px; align-items: center; cursor: pointer; font-size: 11px; }
#explorer-panel .grid { display: flex; flex-wrap: wrap; gap: 3px; }
#explorer-panel .hint { color: #666; font-size: 12px; }
#explorer-panel .error { color: #b00; }
"""


def stratified_subset(labels: np.ndarray, n: int, per_label_min: int, seed: int) -> np.ndarray:
    """Indices of at most ``n`` objects, sorted: every label keeps up to ``per_label_min`` members
    (so a rare cluster, such as the artefact island, is on the map), the rest drawn at random.

    Args:
        labels: (N,) integer cluster label of each object (-1, DBSCAN's noise, is a label too).
        n: size of the subset; all N objects when N <= n.
        per_label_min: members guaranteed to each label (all of a smaller label).
        seed: seed of the random draws.
    """
    if len(labels) <= n:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(labels))
    chosen = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = order[labels[order] == label]
        chosen[members[:per_label_min]] = True
    if chosen.sum() > n:  # more labels than room: keep the guaranteed ones in random order
        keep = order[chosen[order]][:n]
        chosen[:] = False
        chosen[keep] = True
    rest = order[~chosen[order]][: n - chosen.sum()]
    chosen[rest] = True
    return np.flatnonzero(chosen)


def cutout_uri(image: np.ndarray, bands: str, quality: int = 75) -> str:
    """A grz cutout (bands, H, W) in nanomaggies as a JPEG data URI in the Legacy Survey viewer's colours.

    JPEG, not PNG: sky noise does not compress losslessly. A 64x64 mock cutout is 11.5 kB as PNG,
    3.2 kB as JPEG at quality 90 and 2.0-2.4 kB at 70-80, and the page carries thousands of them.
    """
    rgb = (255 * legacysurvey_rgb(image, bands)).round().astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def binned_spectra(flux: np.ndarray, ivar: np.ndarray, wavelength: np.ndarray, factor: int):
    """The spectra as the page draws them: ``factor`` pixels averaged (``rebin_spectra``), NaN
    where no pixel has data, so that the plot leaves a gap there.

    Args:
        flux, ivar: (n, L) in the dataset file's units.
        wavelength: (L,) Å.
    Returns:
        (wavelength (L // factor,), flux (n, L // factor)).
    """
    binned, weight = rebin_spectra(flux, ivar, factor)
    length = len(wavelength) // factor * factor
    return wavelength[:length].reshape(-1, factor).mean(axis=1), np.where(weight > 0, binned, np.nan)


def quantised(spectra: np.ndarray) -> dict:
    """Each row as int16 codes with its own offset and scale (-32768 marks a missing pixel)."""
    low = np.nanmin(np.where(np.isfinite(spectra), spectra, np.nan), axis=1)
    high = np.nanmax(np.where(np.isfinite(spectra), spectra, np.nan), axis=1)
    low, high = np.nan_to_num(low), np.nan_to_num(high)
    scale = np.where(high > low, (high - low) / 65000.0, 1.0)
    codes = np.round((spectra - low[:, None]) / scale[:, None] - 32500.0)
    codes = np.where(np.isfinite(codes), codes, -32768).astype("<i2")
    return {"codes": base64.b64encode(codes.tobytes()).decode(), "offset": low.tolist(), "scale": scale.tolist()}


def float32_base64(values: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(values, dtype="<f4").tobytes()).decode()


def colours(values: np.ndarray, cmap: str) -> list[str]:
    """Hex colours of ``values`` on a matplotlib colour map, scaled to the 1-99 percentiles."""
    finite = np.isfinite(values)
    low, high = np.percentile(values[finite], [1, 99]) if finite.any() else (0.0, 1.0)
    scaled = np.clip((values - low) / (high - low if high > low else 1.0), 0, 1)
    rgba = matplotlib.colormaps[cmap](np.where(finite, scaled, 0.0))
    rgba[~finite] = (0.7, 0.7, 0.7, 1.0)
    return [matplotlib.colors.to_hex(c) for c in rgba]


def label_colours(labels: np.ndarray) -> list[str]:
    """A qualitative colour per cluster label; grey for -1 (noise)."""
    palette = matplotlib.colormaps["tab20"].colors
    return ["#b0b0b0" if label < 0 else matplotlib.colors.to_hex(palette[label % 20]) for label in labels]


def explorer_page(
    galaxies: dict[str, np.ndarray],
    umaps: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    thumbnails: list[str],
    wavelength: np.ndarray,
    spectra: np.ndarray,
    top_k: int,
    title: str,
) -> str:
    """The page as one HTML string (see the module docstring).

    Args:
        galaxies: per-galaxy columns of the page's n galaxies: TARGETID, image_embedding and
            spectrum_embedding (n, d) L2-normalised, and any of CATALOGUE_COLUMNS.
        umaps: modality -> (n, 2) UMAP coordinates.
        labels: cluster-label name -> (n,) integer labels (-1: noise).
        thumbnails: n JPEG data URIs of the cutouts.
        wavelength, spectra: (L,) Å and (n, L) binned flux (NaN: no data).
        top_k: neighbours listed per query/answer pair.
    """
    from bokeh.embed import file_html
    from bokeh.layouts import column, row
    from bokeh.models import (
        ColumnDataSource,
        CustomJS,
        Div,
        HoverTool,
        Select,
        TapTool,
        TextInput,
    )
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    n = len(galaxies["TARGETID"])
    shown = [c for c in CATALOGUE_COLUMNS if c in galaxies]
    data = {
        "TARGETID": galaxies["TARGETID"].astype(str),  # DESI TARGETIDs exceed 2**53: strings in JavaScript
        "thumb": thumbnails,
        **{c: np.asarray(galaxies[c], dtype=float) for c in shown},
        **{f"x_{m}": umaps[m][:, 0] for m in umaps},
        **{f"y_{m}": umaps[m][:, 1] for m in umaps},
    }
    colour_options = {
        c: colours(np.asarray(galaxies[c], dtype=float), "viridis") for c in COLOUR_COLUMNS if c in galaxies
    }
    colour_options |= {name: label_colours(values) for name, values in labels.items()}
    for name, values in colour_options.items():
        data[f"colour_{name}"] = values
    first_map, first_colour = next(iter(umaps)), next(iter(colour_options))
    data |= {"x": data[f"x_{first_map}"], "y": data[f"y_{first_map}"], "colour": data[f"colour_{first_colour}"]}
    source = ColumnDataSource(data, name="galaxies")

    plot = figure(
        name="umap", width=640, height=600, tools="pan,wheel_zoom,box_select,lasso_select,reset",
        active_drag="lasso_select", active_scroll="wheel_zoom", title=f"UMAP of the {first_map} embeddings",
        x_axis_label="UMAP 1", y_axis_label="UMAP 2",
    )  # fmt: skip
    points = plot.scatter("x", "y", source=source, size=5, fill_color="colour", line_color=None, fill_alpha=0.8)
    hover_lines = "".join(f"<div>{c} <b>@{c}{{0.000}}</b></div>" for c in ("Z_HP", "LOGMSTAR") if c in shown)
    plot.add_tools(
        HoverTool(
            renderers=[points],
            tooltips=f'<div><img src="@thumb" width="96" height="96" style="image-rendering:pixelated"><div>'
            f"TARGETID @TARGETID</div>{hover_lines}</div>",
        ),
        # "inspect": a click opens the galaxy nearest to it and leaves the box/lasso selection alone
        TapTool(
            behavior="inspect",
            renderers=[points],
            callback=CustomJS(args={"source": source}, code="window.AstroExplorer.openNearest(cb_data.geometries);"),
        ),
    )
    map_select = Select(title="Map", value=first_map, options=list(umaps), name="map-select")
    colour_select = Select(title="Colour by", value=first_colour, options=list(colour_options), name="colour-select")
    target_input = TextInput(title="TARGETID", placeholder="type a TARGETID and press Enter", name="targetid-input")
    map_select.js_on_change(
        "value",
        CustomJS(
            args={"source": source, "plot": plot},
            code="const m = cb_obj.value; source.data.x = source.data['x_' + m]; source.data.y = source.data['y_' + m];"
            "source.change.emit(); plot.title.text = 'UMAP of the ' + m + ' embeddings';",
        ),
    )
    colour_select.js_on_change(
        "value",
        CustomJS(
            args={"source": source},
            code="source.data.colour = source.data['colour_' + cb_obj.value]; source.change.emit();",
        ),
    )
    target_input.js_on_change("value", CustomJS(code="window.AstroExplorer.openTarget(cb_obj.value);"))
    source.selected.js_on_change("indices", CustomJS(code="window.AstroExplorer.gallery(cb_obj.indices);"))
    help_text = Div(
        width=640,
        text=f"{n:,} held-out galaxies. Hover for a cutout; click a galaxy to open it with its {top_k} nearest "
        "neighbours in each modality; draw a lasso (or a box) for a gallery of the galaxies inside."
    )
    layout = column(help_text, row(map_select, colour_select, target_input), plot)

    payload = {
        "n": n,
        "top_k": top_k,
        "dim": int(galaxies["image_embedding"].shape[1]),
        "image_embedding": float32_base64(galaxies["image_embedding"]),
        "spectrum_embedding": float32_base64(galaxies["spectrum_embedding"]),
        "pairs": {pair: [q.removesuffix("_embedding"), a.removesuffix("_embedding")] for pair, (q, a) in PAIRS.items()},
        "wavelength": np.round(wavelength, 2).tolist(),
        "spectra": quantised(spectra),
        "columns": shown,
        "lines": {"emission": EMISSION_LINES, "absorption": ABSORPTION_LINES},
    }
    page = file_html(layout, INLINE, title=title)
    # "</" cannot appear inside a <script> element; JSON allows escaping the slash.
    blob = json.dumps(payload, separators=(",", ":")).replace("</", "<\\/")
    extra = (
        f"<style>{STYLE}</style>\n"
        f'<div id="explorer-panel"><div id="galaxy"><p class="hint">Click a galaxy on the map, or type its '
        f'TARGETID.</p></div><div id="gallery"></div></div>\n'
        f'<script type="application/json" id="explorer-data">{blob}</script>\n'
        f"<script>\n{SCRIPT.read_text()}\n</script>\n"
    )
    # the last </body>: Bokeh's inline JavaScript contains the string too
    head, tail = page.rsplit("</body>", 1)
    return head + extra + "</body>" + tail


def write_explorer(
    embedding_paths: Sequence[str | Path],
    splits: Sequence[str],
    dataset_paths: dict[str, str | Path],
    umap_paths: dict[str, str | Path],
    cluster_paths: dict[str, str | Path],
    output: str | Path,
    n_galaxies: int,
    per_cluster_min: int,
    top_k: int,
    spectrum_bin: int,
    seed: int,
) -> None:
    """Build ``results/explorer.html`` from the workflow's files.

    Args:
        embedding_paths, splits: the held-out embedding files and their split names, as the UMAP
            rule read them (the maps and clusters are row-aligned with their concatenation).
        dataset_paths: split -> dataset file (cutouts and spectra).
        umap_paths: modality -> UMAP table of the umap rule.
        cluster_paths: label name (say "DBSCAN (image UMAP)") -> cluster table (TARGETID, ..., CLUSTER);
            the first one stratifies the subset.
        n_galaxies, per_cluster_min, seed: the subset (``stratified_subset``).
        top_k: neighbours per query/answer pair; spectrum_bin: pixels averaged per plotted point.
    """
    import pandas as pd

    if top_k >= n_galaxies:
        raise ValueError(
            f"explorer.top_k = {top_k} neighbours need more galaxies on the page "
            f"than explorer.n_galaxies = {n_galaxies}"
        )
    heldout = load_heldout(embedding_paths, splits)
    umaps, labels = {}, {}
    for modality in MODALITIES:
        table = read_umap_table(umap_paths[modality])
        check_aligned(table, heldout, umap_paths[modality])
        umaps[modality] = table[["UMAP_1", "UMAP_2"]].to_numpy()
    for name, path in cluster_paths.items():
        table = pd.read_csv(path)
        check_aligned(table, heldout, path)
        labels[name] = table["CLUSTER"].to_numpy()
    n_total = len(heldout["TARGETID"])
    if top_k >= n_total:
        raise ValueError(f"explorer.top_k = {top_k} neighbours need more galaxies than the {n_total} of {list(splits)}")
    subset = stratified_subset(next(iter(labels.values())), n_galaxies, per_cluster_min, seed)
    log.info("explorer: %d of %d held-out galaxies (stratified by %s)", len(subset), n_total, next(iter(labels)))
    rows = read_heldout_rows(
        dataset_paths, heldout["SPLIT"][subset], heldout["ROW"][subset], ["image", "spectrum", "ivar"]
    )
    attrs = dataset_attrs(dataset_paths[splits[0]])
    bands = str(attrs.get("bands", "grz"))
    wavelength, spectra = binned_spectra(rows["spectrum"], rows["ivar"], attrs["wavelength"], spectrum_bin)
    page = explorer_page(
        galaxies={
            k: v[subset]
            for k, v in heldout.items()
            if k in (*CATALOGUE_COLUMNS, "TARGETID", "image_embedding", "spectrum_embedding")
        },
        umaps={m: xy[subset] for m, xy in umaps.items()},
        labels={name: values[subset] for name, values in labels.items()},
        thumbnails=[cutout_uri(image, bands) for image in rows["image"]],
        wavelength=wavelength,
        spectra=spectra,
        top_k=top_k,
        title="AstroCLIP explorer",
    )
    with atomic_path(output) as tmp:
        tmp.write_text(page, encoding="utf-8")
    log.info("explorer: wrote %s (%.1f MB)", output, Path(output).stat().st_size / 1e6)
