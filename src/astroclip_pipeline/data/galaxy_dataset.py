"""A torch Dataset over one split file: rows read lazily (safe with several DataLoader workers), or
all at once when they are small."""

from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from ..files import open_hdf5

#: Splits whose requested datasets take at most this many bytes are read into memory once, when the
#: Dataset is made: reading a row from HDF5 costs ~0.3 ms per dataset, which at laptop scale was a
#: third of a spectrum-pretraining step (10 of 30 ms per batch of 32). Larger splits (the paper
#: scale: 12 GB of spectra, 40 GB of cutouts) are read row by row as before.
IN_MEMORY_BYTES = 1 << 30


class GalaxyDataset(Dataset):
    """Rows of ``results/data/{split}.h5`` as dicts of tensors.

    ``fields`` are array datasets (``image``, ``spectrum``, ``ivar``) and ``columns`` scalar
    catalogue columns (``Z_HP``, ``LOGMSTAR``, ...). When they take at most ``IN_MEMORY_BYTES``
    they are read into memory here (the same values either way); otherwise the HDF5 file is opened
    on first access in each process, not in ``__init__``: an open h5py handle cannot be shared
    with forked workers.
    """

    def __init__(
        self,
        path: str | Path,
        fields: Sequence[str] = ("image", "spectrum", "ivar"),
        columns: Sequence[str] = ("Z_HP", "LOGMSTAR"),
    ):
        self.path = Path(path)
        self.fields = tuple(fields)
        self.columns = tuple(columns)
        self._h5: h5py.File | None = None
        with open_hdf5(self.path, "r") as h5:
            absent = [k for k in (*self.fields, *self.columns, "TARGETID") if k not in h5]
            if absent:
                raise KeyError(f"{self.path}: no dataset(s) {absent}; it has {sorted(h5.keys())}")
            self._length = len(h5["TARGETID"])
            names = ("TARGETID", *self.fields, *self.columns)
            n_bytes = sum(h5[name].size * (4 if name in self.fields else h5[name].dtype.itemsize) for name in names)
            self._rows = None
            if n_bytes <= IN_MEMORY_BYTES:
                self._rows = {name: _as_stored(h5, name, name in self.fields) for name in names}

    def __len__(self) -> int:
        return self._length

    def _file(self) -> h5py.File:
        if self._h5 is None:
            self._h5 = open_hdf5(self.path, "r")
        return self._h5

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for {self.path} ({self._length} rows)")
        h5 = self._file() if self._rows is None else self._rows
        item = {"TARGETID": torch.tensor(int(h5["TARGETID"][index]))}
        for name in self.fields:
            # a copy: a caller that changes its row in place must not change the rows held in memory
            item[name] = torch.from_numpy(np.array(h5[name][index], dtype=np.float32))
        for name in self.columns:
            item[name] = torch.tensor(float(h5[name][index]), dtype=torch.float32)
        return item

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_h5"] = None  # each worker opens its own handle
        return state


def _as_stored(h5: h5py.File, name: str, field: bool) -> np.ndarray:
    """A whole dataset in memory, array fields as the float32 rows ``__getitem__`` returns."""
    return np.asarray(h5[name][()], dtype=np.float32) if field else h5[name][()]
