"""The data overview of the report: cutouts, example spectra and the catalogue's distributions."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..files import open_hdf5
from .figures import plt, save_figure
from .rgb import legacysurvey_rgb

#: Rest-frame lines marked on example spectra (Å, air): emission lines above, absorption below.
EMISSION_LINES = {"[O II]": 3727.4, "Hβ": 4861.3, "[O III]": 5006.8, "Hα": 6562.8, "[N II]": 6583.4, "[S II]": 6716.4}
ABSORPTION_LINES = {"Ca K": 3933.7, "Ca H": 3968.5, "G band": 4304.4, "Mg b": 5175.3, "Na D": 5892.9}


def _random_rows(n_rows: int, n: int, seed: int) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(n_rows, size=min(n, n_rows), replace=False))


def plot_cutout_gallery(dataset_path: str | Path, output_path: str | Path, n: int, seed: int) -> None:
    """Random cutouts of one split as Legacy Survey viewer RGB, titled with z and log M*."""
    with open_hdf5(dataset_path, "r") as h5:
        rows = _random_rows(len(h5["TARGETID"]), n, seed)
        images = h5["image"][rows]
        z, log_mass = h5["Z_HP"][rows], h5["LOGMSTAR"][rows]
        artefact = h5["TRUTH_ARTEFACT_KIND"].asstr()[rows] if "TRUTH_ARTEFACT_KIND" in h5 else None
        bands, pixscale = str(h5.attrs["bands"]), float(h5.attrs["pixscale"])
    n_cols = min(8, len(rows))
    n_rows = int(np.ceil(len(rows) / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(1.6 * n_cols, 1.75 * n_rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, ax in enumerate(axes.flat[: len(rows)]):
        ax.imshow(legacysurvey_rgb(images[i], bands), origin="lower")
        title = f"z={z[i]:.2f}  logM={log_mass[i]:.1f}"
        if artefact is not None and artefact[i] != "none":
            title += f"\n[{artefact[i]}]"
        ax.set_title(title, fontsize=6.5)
    size_arcsec = images.shape[-1] * pixscale
    fig.suptitle(f'{len(rows)} random cutouts ({bands}, {size_arcsec:.0f}" across)', fontsize=9)
    save_figure(fig, output_path)


def plot_morphology_gallery(dataset_path: str | Path, output_path: str | Path, per_kind: int, seed: int) -> None:
    """The mock survey's morphologies (``TRUTH_MORPHOLOGY``), one row each: random members of the
    tenth of that kind with the largest disks (at least 5 x per_kind of them), where the seeing hides
    least of their structure (the very largest alone would be nearby galaxies that saturate)."""
    rng = np.random.default_rng(seed)
    with open_hdf5(dataset_path, "r") as h5:
        if "TRUTH_MORPHOLOGY" not in h5:
            raise KeyError(f"{dataset_path}: no TRUTH_MORPHOLOGY column; only the mock survey knows its morphology")
        kinds = h5["TRUTH_MORPHOLOGY"].asstr()[()]
        size = h5["TRUTH_RE_DISK"][()]
        chosen = {}
        for kind in sorted(set(kinds)):
            members = np.flatnonzero(kinds == kind)
            largest = members[np.argsort(-size[members])][: max(5 * per_kind, len(members) // 10)]
            chosen[kind] = np.sort(rng.choice(largest, size=min(per_kind, len(largest)), replace=False))
        rows = np.unique(np.concatenate(list(chosen.values())))
        images = dict(zip(rows, h5["image"][rows], strict=True))
        z, arms, bar = h5["Z_HP"][()], h5["TRUTH_ARMS"][()], h5["TRUTH_BAR"].asstr()[()]
        bands = str(h5.attrs["bands"])
    fig, axes = plt.subplots(len(chosen), per_kind, figsize=(1.6 * per_kind, 1.75 * len(chosen)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for (kind, members), row in zip(chosen.items(), axes, strict=True):
        for ax, i in zip(row, members, strict=False):
            ax.imshow(legacysurvey_rgb(images[i], bands), origin="lower")
            detail = f"{arms[i]} arms" if arms[i] else ""
            detail += f" {bar[i]} bar" if bar[i] != "no" else ""
            ax.set_title(f"{kind} z={z[i]:.2f}\n{detail}", fontsize=6)
    fig.suptitle("Mock survey morphologies (truth), among the largest disks of each kind", fontsize=9)
    save_figure(fig, output_path)


def _mark_lines(ax: plt.Axes, z: float, wavelength: np.ndarray) -> None:
    lo, hi = wavelength[0], wavelength[-1]
    for lines, colour, y in ((EMISSION_LINES, "tab:blue", 0.97), (ABSORPTION_LINES, "tab:red", 0.05)):
        for name, rest in lines.items():
            observed = rest * (1.0 + z)
            if lo < observed < hi:
                ax.axvline(observed, color=colour, lw=0.6, alpha=0.5, ls="--")
                ax.text(observed, y, name, transform=ax.get_xaxis_transform(), fontsize=6, color=colour,
                        rotation=90, ha="right", va="top" if y > 0.5 else "bottom")  # fmt: skip


def plot_example_spectra(dataset_path: str | Path, output_path: str | Path, n: int, seed: int) -> None:
    """Random spectra (masked pixels left out) with lines marked at their observed wavelengths."""
    with open_hdf5(dataset_path, "r") as h5:
        rows = _random_rows(len(h5["TARGETID"]), n, seed)
        wavelength = h5["wavelength"][()]
        flux, ivar = h5["spectrum"][rows], h5["ivar"][rows]
        z, log_mass, target = h5["Z_HP"][rows], h5["LOGMSTAR"][rows], h5["TARGETID"][rows]
        unit = str(h5.attrs["flux_unit"])
    fig, axes = plt.subplots(len(rows), 1, figsize=(10, 2.1 * len(rows)), sharex=True, squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        good = ivar[i] > 0
        shown = np.where(good, flux[i], np.nan)
        ax.plot(wavelength, shown, lw=0.5, color="k")
        noise = np.where(good, 1.0 / np.sqrt(np.where(good, ivar[i], 1.0)), np.nan)
        ax.fill_between(wavelength, -noise, noise, color="0.7", lw=0, label="±1σ noise")
        ax.set_ylim(np.nanpercentile(shown, 0.5) - 1, np.nanpercentile(shown, 99.8) * 1.3 + 1)
        _mark_lines(ax, z[i], wavelength)
        ax.set_title(f"TARGETID {target[i]}   z = {z[i]:.3f}   log M* = {log_mass[i]:.2f}", fontsize=8, loc="left")
        ax.set_ylabel("flux", fontsize=8)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("observed wavelength [Å]")
    fig.suptitle(f"Example spectra (flux in {unit}); lines at (1+z) λ_rest", fontsize=9)
    save_figure(fig, output_path)


def plot_distributions(dataset_paths: Sequence[str | Path], output_path: str | Path) -> None:
    """Histograms of redshift, stellar mass and g, r, z magnitudes per split, and z against M*."""
    data: dict[str, dict[str, np.ndarray]] = {}
    for path in dataset_paths:
        with open_hdf5(path, "r") as h5:
            data[Path(path).stem] = {k: h5[k][()] for k in ("Z_HP", "LOGMSTAR", "MAG_G", "MAG_R", "MAG_Z")}
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.5))
    panels = [("Z_HP", "redshift"), ("LOGMSTAR", "log M* [M☉]"), ("MAG_G", "g [AB mag]"), ("MAG_R", "r [AB mag]"),
              ("MAG_Z", "z [AB mag]")]  # fmt: skip
    everything = {k: np.concatenate([d[k] for d in data.values()]) for k, _ in panels}
    for ax, (key, label) in zip(axes.flat, panels, strict=False):
        bins = np.linspace(*np.nanpercentile(everything[key], [0.2, 99.8]), 40)
        for split, values in data.items():
            ax.hist(values[key], bins=bins, histtype="step", density=True, label=f"{split} ({len(values[key])})")
        ax.set_xlabel(label)
        ax.set_ylabel("density")
    axes[0, 0].legend(fontsize=8)
    ax = axes[1, 2]
    ax.hexbin(everything["Z_HP"], everything["LOGMSTAR"], gridsize=35, mincnt=1, cmap="viridis", bins="log")
    ax.set_xlabel("redshift")
    ax.set_ylabel("log M* [M☉]")
    ax.set_title("flux limit: massive galaxies reach higher z", fontsize=8)
    fig.tight_layout()
    save_figure(fig, output_path)
