"""Stage 5: the embedding files, ``results/embeddings/{split}.h5``.

Row-aligned with the split's dataset file: ``TARGETID``, ``image_embedding`` and
``spectrum_embedding`` (n, 128) float32, each row L2-normalised, and every per-galaxy column of
the dataset file (PROVABGS properties, magnitudes, and the mock survey's ``TRUTH_*`` columns when
present), so that the evaluation never has to reopen the large dataset files.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..devices import require_gpus
from ..files import atomic_path, open_hdf5
from ..models.astroclip import load_astroclip

#: The dataset's arrays that are not per-galaxy scalars.
_ARRAYS = ("image", "spectrum", "ivar", "wavelength")


def embed_split(
    model_path: str | Path, dataset_path: str | Path, output: str | Path, batch_size: int = 128, gpus: int = 0,
    cpu_fallback: bool = False,
) -> None:  # fmt: skip
    """Both embeddings of every galaxy of a dataset file, with its catalogue columns, to ``output``.

    ``gpus`` is the ``align:`` block's: with ``gpus`` > 0 and no visible GPU it stops at once
    (``devices.require_gpus``, rule ``embed``) unless ``cpu_fallback``. A GPU is used when there is one.
    """
    require_gpus(gpus, "align", cpu_fallback, rule="embed")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = load_astroclip(model_path).to(device)
    with open_hdf5(dataset_path, "r") as h5:
        n = len(h5["TARGETID"])
        image_out, spectrum_out = np.zeros((n, 0), np.float32), np.zeros((n, 0), np.float32)
        chunks = []
        for start in tqdm(range(0, n, batch_size), desc=f"embedding {Path(dataset_path).name}", unit="batch"):
            rows = slice(start, start + batch_size)
            batch = [
                torch.as_tensor(h5[k][rows], dtype=torch.float32, device=device) for k in ("image", "spectrum", "ivar")
            ]
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                image, spectrum = model.embed(*batch)
            chunks.append((image.float().cpu().numpy(), spectrum.float().cpu().numpy()))
        if chunks:
            image_out = np.concatenate([c[0] for c in chunks])
            spectrum_out = np.concatenate([c[1] for c in chunks])
        columns = {k: h5[k][()] for k in h5 if k not in _ARRAYS and h5[k].ndim == 1 and len(h5[k]) == n}
    with atomic_path(output) as tmp, open_hdf5(tmp, "w") as out:
        out.create_dataset("image_embedding", data=image_out, track_times=False)
        out.create_dataset("spectrum_embedding", data=spectrum_out, track_times=False)
        for name, values in columns.items():
            out.create_dataset(name, data=values, track_times=False)
        out.attrs["model"] = str(model_path)
        out.attrs["dataset"] = str(dataset_path)


def read_embeddings(path: str | Path) -> dict[str, np.ndarray]:
    """Every dataset of an embedding file, as arrays (strings decoded)."""
    with open_hdf5(path, "r") as h5:
        for key in ("TARGETID", "image_embedding", "spectrum_embedding"):
            if key not in h5:
                raise KeyError(f"{path}: no {key!r}; expected an embedding file of the embed rule")
        return {k: (h5[k].asstr()[()] if h5[k].dtype.kind == "O" else h5[k][()]) for k in h5}


def read_embedding_files(paths: Sequence[str | Path]) -> dict[str, np.ndarray]:
    """Several embedding files (say the val and test splits) as one searchable set of galaxies.

    Only the columns every file has are kept.
    """
    return concatenate_common([read_embeddings(p) for p in paths])


def concatenate_common(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Row-wise concatenation of several files' columns, keeping only the columns every part has
    (a source without truth columns has none of them anywhere)."""
    common = set.intersection(*(set(p) for p in parts))
    return {key: np.concatenate([p[key] for p in parts]) for key in sorted(common)}
