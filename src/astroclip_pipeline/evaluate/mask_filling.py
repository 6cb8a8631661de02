"""How well the pretrained spectrum transformer fills masked segments, against linear interpolation.

Scored twice: over every masked pixel, where the smooth continuum dominates, and over the masked pixels
near the strong lines at each galaxy's redshift, which is where a model that has learned spectra (and
so redshift) must beat a straight line: the paper's mask-filling figures (Parker et al. 2024, appendix
C) show lines reproduced "with high precision".
"""

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ..files import atomic_path, open_hdf5
from ..models.masked_segments import chunk_mask, hide, interpolation_baseline, masked_mse, reconstruct_spectrum
from ..models.specformer import PATCH_SIZE, PATCH_STRIDE, load_encoder, segment_tokens, standardise, tokenize
from .figures import plt, save_figure
from .overview import ABSORPTION_LINES, EMISSION_LINES

#: The strong lines of the near-lines score, rest-frame Å (air, as ``overview``'s lists; DESI's grid
#: is in vacuum, 1-2 Å redder, well inside ``LINE_HALF_WIDTH``). Doublets and triplets list each line.
STRONG_LINES = {
    "[O II]": (3726.0, 3728.8),
    "Ca K": (3933.7,),
    "Ca H": (3968.5,),
    "Hβ": (4861.3,),
    "[O III]": (4958.9, 5006.8),
    "Mg b": (5167.3, 5172.7, 5183.6),
    "Na D": (5889.9, 5895.9),
    "Hα": (6562.8,),
}
#: The emission lines the mask-filling figure hides, the strongest first (in star-forming galaxies).
FIGURE_LINES = ("Hα", "[O III]", "Hβ", "[O II]")
#: Half-width (rest-frame Å) of the window around each line: DESI's resolution (~1.8 Å FWHM) and the
#: lines' velocity widths put nearly all of a line's flux within a few Å of its centre.
LINE_HALF_WIDTH = 5.0


def near_strong_lines(wavelength: np.ndarray, z: np.ndarray, half_width: float = LINE_HALF_WIDTH) -> torch.Tensor:
    """(n_spectra, n_pixels) True where an observed-frame pixel centre ``wavelength`` (Å) lies within
    ``half_width`` rest-frame Å of a line of ``STRONG_LINES`` redshifted to ``z`` (n_spectra,)."""
    rest = np.asarray(wavelength, dtype=np.float64)[None, :] / (1.0 + np.asarray(z, dtype=np.float64)[:, None])
    near = np.zeros(rest.shape, dtype=bool)
    for line in (wavelength for lines in STRONG_LINES.values() for wavelength in lines):
        near |= np.abs(rest - line) <= half_width
    return torch.from_numpy(near)


def _batches(path: str | Path, batch_size: int):
    """(flux, ivar, near strong lines) per batch of a dataset file's spectra."""
    with open_hdf5(path, "r") as h5:
        wavelength = h5["wavelength"][()]
        for start in range(0, len(h5["TARGETID"]), batch_size):
            part = slice(start, start + batch_size)
            near = near_strong_lines(wavelength, h5["Z_HP"][part])
            yield torch.from_numpy(h5["spectrum"][part]), torch.from_numpy(h5["ivar"][part]), near


@torch.no_grad()
def mask_filling_scores(
    encoder_path: str | Path, dataset_path: str | Path, n_chunks: int, chunk_length: int, seed: int = 0,
    batch_size: int = 256,
) -> pd.DataFrame:  # fmt: skip
    """Masked-region MSE (standardised flux units) of the model and of linear interpolation.

    Both see exactly the same masks (seeded) and are scored on the same entries: masked tokens'
    good pixels (``masked_mse``), and those of them within ``LINE_HALF_WIDTH`` of a strong line at
    the galaxy's redshift ``Z_HP`` (``masked_mse_near_lines``). A third row gives the noise floor,
    the MSE that a perfect, noise-free prediction would still have (the mean noise variance
    1/(ivar std²) over those entries). Returns one row each; each score also relative to
    interpolation, and the number of pixel entries it averages (each pixel is in two tokens).
    """
    model = load_encoder(encoder_path)
    generator = torch.Generator().manual_seed(seed)
    methods = ("transformer", "linear interpolation", "noise floor")
    squared = {(method, region): 0.0 for method in methods for region in ("all", "lines")}
    n_entries = {"all": 0.0, "lines": 0.0}
    n_spectra = 0
    for flux, ivar, near in _batches(dataset_path, batch_size):
        tokens, valid = tokenize(flux, ivar)
        mask = chunk_mask(len(flux), tokens.shape[1], n_chunks, chunk_length, generator)
        _, prediction = model(hide(tokens, mask))
        baseline = interpolation_baseline(flux, ivar, mask)
        near_lines = segment_tokens(near, False)
        for region, scored in (("all", valid), ("lines", valid & near_lines)):
            weight = (mask[..., None] & scored).sum().item()
            squared["transformer", region] += masked_mse(prediction, tokens, mask, scored).item() * weight
            squared["linear interpolation", region] += masked_mse(baseline, tokens, mask, scored).item() * weight
            squared["noise floor", region] += _noise_variance(flux, ivar, mask, scored)
            n_entries[region] += weight
        n_spectra += len(flux)
    mean = {key: total / max(n_entries[key[1]], 1.0) for key, total in squared.items()}
    rows = [
        {
            "method": method,
            "masked_mse": mean[method, "all"],
            "relative_to_interpolation": mean[method, "all"] / mean["linear interpolation", "all"],
            "masked_mse_near_lines": mean[method, "lines"],
            "near_lines_relative_to_interpolation": mean[method, "lines"] / mean["linear interpolation", "lines"],
            "n_spectra": n_spectra,
            "n_masked_pixels": int(n_entries["all"]),
            "n_masked_pixels_near_lines": int(n_entries["lines"]),
        }
        for method in methods
    ]
    return pd.DataFrame(rows)


def _noise_variance(flux: torch.Tensor, ivar: torch.Tensor, mask: torch.Tensor, valid: torch.Tensor) -> float:
    """Sum over the scored entries of each pixel's noise variance in standardised units."""
    _, _, std = standardise(flux, ivar)
    variance = torch.where(ivar > 0, 1.0 / (ivar.clamp_min(1e-30) * std**2), torch.zeros_like(ivar))
    # the statistics token carries no pixel noise: 0
    return float((segment_tokens(variance) * (mask[..., None] & valid)).sum())


def write_mask_filling_table(encoder_path, dataset_path, output_path, n_chunks: int, chunk_length: int, seed: int):
    table = mask_filling_scores(encoder_path, dataset_path, n_chunks, chunk_length, seed)
    with atomic_path(output_path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.5g")


def _pixel_ranges(mask_row: torch.Tensor) -> list[tuple[int, int]]:
    """Pixel ranges [start, stop) hidden from the model: covered by masked segment tokens only."""
    masked = mask_row[1:].numpy()
    ranges, start = [], None
    for i, m in enumerate(np.append(masked, False)):
        if m and start is None:
            start = i
        elif not m and start is not None:
            # segments start..i-1 cover pixels start*10 .. (i-1)*10+20; neighbours see the outer 10 each side
            ranges.append((start * PATCH_STRIDE + PATCH_STRIDE, (i - 1) * PATCH_STRIDE + PATCH_SIZE - PATCH_STRIDE))
            start = None
    return ranges


def _lines_in(lo: float, hi: float, z: float, lines: dict | None = None) -> list[str]:
    """The ``lines`` (name -> rest wavelength, or a tuple of them for a multiplet; by default the
    overview's emission and absorption lines) observed between ``lo`` and ``hi`` Å at redshift ``z``."""
    lines = {**EMISSION_LINES, **ABSORPTION_LINES} if lines is None else lines
    return [name for name, rests in lines.items() if any(lo <= rest * (1 + z) <= hi for rest in np.atleast_1d(rests))]


def _strong_lines_in(lo: float, hi: float, z: float) -> list[str]:
    """The ``STRONG_LINES`` (those the near-lines score counts) observed between ``lo`` and ``hi`` Å."""
    return _lines_in(lo, hi, z, STRONG_LINES)


def _inset_order(strong_lines: list[str], target: str | None) -> int:
    return 0 if target in strong_lines else 1 if strong_lines else 2


@torch.no_grad()
def plot_mask_filling(
    encoder_path, dataset_path, output_path, n_examples: int, n_chunks: int, chunk_length: int, seed: int
) -> None:
    """Paper appendix C: truth, masked regions shaded, the model's fill and the interpolation, with
    zoomed insets on masked regions that cover an emission or absorption line."""
    model = load_encoder(encoder_path)
    rng = np.random.default_rng(seed)
    with open_hdf5(dataset_path, "r") as h5:
        rows = np.sort(rng.choice(len(h5["TARGETID"]), size=min(n_examples, len(h5["TARGETID"])), replace=False))
        flux = torch.from_numpy(h5["spectrum"][rows])
        ivar = torch.from_numpy(h5["ivar"][rows])
        z = h5["Z_HP"][rows]
        wavelength = h5["wavelength"][()]
    tokens, _ = tokenize(flux, ivar)
    generator = torch.Generator().manual_seed(seed)
    # For each example, draw masks until one hides the strongest emission line in the spectrum's range
    # (Hα, else [O III], Hβ, [O II]; up to 100 tries), so the insets show the model at work where it
    # matters: a line whose place only the redshift tells.
    masks, targets = [], []
    for i in range(len(rows)):
        in_range = _strong_lines_in(wavelength[0], wavelength[-1], z[i])
        target = next((name for name in FIGURE_LINES if name in in_range), None)
        targets.append(target)
        for _ in range(100):
            mask = chunk_mask(1, tokens.shape[1], n_chunks, chunk_length, generator)[0]
            hidden = [
                line
                for a, b in _pixel_ranges(mask)
                if b > a
                for line in _strong_lines_in(wavelength[a], wavelength[b - 1], z[i])
            ]
            if (target in hidden) if target else hidden:
                break
        masks.append(mask)
    mask = torch.stack(masks)
    _, prediction = model(hide(tokens, mask))
    _, mean, std = standardise(flux, ivar)
    to_flux = lambda standard: (standard * std + mean).numpy()  # noqa: E731
    filled = to_flux(reconstruct_spectrum(prediction, tokens, mask, flux.shape[1]))
    interpolated = to_flux(reconstruct_spectrum(interpolation_baseline(flux, ivar, mask), tokens, mask, flux.shape[1]))

    fig, axes = plt.subplots(len(rows), 1, figsize=(11, 3.0 * len(rows)), squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        good = ivar[i].numpy() > 0
        ax.plot(wavelength, np.where(good, flux[i].numpy(), np.nan), color="0.55", lw=0.5, label="data")
        hidden = np.zeros(len(wavelength), dtype=bool)
        zooms = []
        for a, b in _pixel_ranges(mask[i]):
            if b <= a:
                continue
            hidden[a:b] = True
            ax.axvspan(wavelength[a], wavelength[b - 1], color="tab:orange", alpha=0.15, lw=0)
            names = _lines_in(wavelength[a], wavelength[b - 1], z[i])
            if names:
                zooms.append((a, b, names))
        # the insets zoom on the hidden emission line first, then on the other strong lines
        zooms.sort(
            key=lambda zoom: _inset_order(
                _strong_lines_in(wavelength[zoom[0]], wavelength[zoom[1] - 1], z[i]), targets[i]
            )
        )
        ax.plot(wavelength, np.where(hidden, interpolated[i], np.nan), color="tab:blue", lw=0.9, ls="--",
                label="linear interpolation")  # fmt: skip
        ax.plot(wavelength, np.where(hidden, filled[i], np.nan), color="tab:red", lw=1.0, label="transformer")
        lo, hi = np.nanpercentile(np.where(good, flux[i].numpy(), np.nan), [0.5, 99.9])
        ax.set_ylim(lo - 0.3 * abs(lo), 1.3 * hi)
        ax.set_title(f"z = {z[i]:.3f}: masked regions shaded", fontsize=8, loc="left")
        ax.set_ylabel("flux [1e-17 cgs/Å]", fontsize=8)
        for k, (a, b, names) in enumerate(zooms[:2]):
            inset = ax.inset_axes([0.02 + 0.25 * k, 0.45, 0.22, 0.40])
            pad = slice(max(0, a - 15), min(len(wavelength), b + 15))
            inset.plot(wavelength[pad], np.where(good[pad], flux[i].numpy()[pad], np.nan), color="0.55", lw=0.6)
            inset.plot(wavelength[a:b], interpolated[i][a:b], color="tab:blue", lw=0.9, ls="--")
            inset.plot(wavelength[a:b], filled[i][a:b], color="tab:red", lw=1.0)
            inset.axvspan(wavelength[a], wavelength[b - 1], color="tab:orange", alpha=0.15, lw=0)
            inset.set_title(", ".join(names), fontsize=7)
            inset.tick_params(labelsize=6)
    axes[0, 0].legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("observed wavelength [Å]")
    save_figure(fig, output_path)
