"""Size and load time of the explorer page for N galaxies at the laptop default's scale.

Mock-survey cutouts (64x64) and spectra (DESI grid rebinned by 4) of N galaxies, with random unit
128-d embeddings and random map coordinates (the page does the same work whatever they hold);
the page is built as the explorer rule builds it, then loaded in headless Chromium (Debian's
chromium and chromium-driver), timing until the map is drawn and the panel's script is ready, and
the opening of one galaxy (its four top-k searches among the N). Usage:

    python benchmarks/explorer_page.py --galaxies 3000
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from astroclip_pipeline.evaluate.explorer import CATALOGUE_COLUMNS, binned_spectra, cutout_uri, explorer_page
from astroclip_pipeline.sources.mock.survey import MockSurveySpec, write_cutouts, write_spectra, write_targets
from astroclip_pipeline.sources.shards import read_cutout_shard, read_spectra_shard


def mock_galaxies(n: int, root: Path):
    spec = MockSurveySpec(seed=5, n_galaxies=n, galaxies_per_shard=n, rebin=4, image_size=64)
    write_targets(spec, root / "targets.parquet", root / "galaxies.parquet")
    write_spectra(spec, root / "galaxies.parquet", 0, root / "spectra.h5", root / "missing-s.csv")
    write_cutouts(spec, root / "galaxies.parquet", 0, root / "cutouts.h5", root / "missing-c.csv")
    return read_spectra_shard(root / "spectra.h5"), read_cutout_shard(root / "cutouts.h5")


def load_in_chromium(page: Path) -> tuple[float, float]:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        start = time.perf_counter()
        driver.get(page.as_uri())
        WebDriverWait(driver, 60, poll_frequency=0.02).until(
            lambda d: d.execute_script(
                "return !!window.AstroExplorer && Bokeh.documents.length > 0 && "
                "!!Bokeh.index.get_one(Bokeh.documents[0].get_model_by_name('umap'))"
            )
        )
        interactive = time.perf_counter() - start
        open_ms = driver.execute_script(
            "const t = performance.now(); AstroExplorer.open(0); return performance.now() - t"
        )
        return interactive, open_ms
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--galaxies", type=int, default=3000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spectra, cutouts = mock_galaxies(args.galaxies, root)
        n = len(cutouts.targetid)
        embeddings = rng.normal(size=(2, n, 128)).astype(np.float32)
        embeddings /= np.linalg.norm(embeddings, axis=2, keepdims=True)
        start = time.perf_counter()
        wavelength, binned = binned_spectra(spectra.flux[:n], spectra.ivar[:n], spectra.wavelength, 4)
        html = explorer_page(
            galaxies={
                "TARGETID": cutouts.targetid,
                "image_embedding": embeddings[0],
                "spectrum_embedding": embeddings[1],
                **{column: rng.normal(size=n) for column in CATALOGUE_COLUMNS},
            },  # fmt: skip
            umaps={m: rng.normal(size=(n, 2)) for m in ("image", "spectrum", "combined")},
            labels={"DBSCAN": rng.integers(-1, 12, n), "k-means": rng.integers(0, 10, n)},
            thumbnails=[cutout_uri(image, cutouts.bands) for image in cutouts.image],
            wavelength=wavelength,
            spectra=binned,
            top_k=8,
            title="benchmark",
        )
        built = time.perf_counter() - start
        page = root / "explorer.html"
        page.write_text(html)
        interactive, open_ms = load_in_chromium(page)
        thumbs = np.mean([len(cutout_uri(image, cutouts.bands)) for image in cutouts.image[:200]])
        print(
            f"{n} galaxies: page {page.stat().st_size / 1e6:.1f} MB (cutouts {thumbs / 1e3:.1f} kB each as base64 "
            f"JPEG), built in {built:.1f} s; Chromium: interactive after {interactive:.2f} s, "
            f"one galaxy opened in {open_ms:.0f} ms"
        )


if __name__ == "__main__":
    main()
