"""A torch Dataset over one split file, reading rows lazily (safe with several DataLoader workers)."""

from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from ..files import open_hdf5


class GalaxyDataset(Dataset):
    """Rows of ``results/data/{split}.h5`` as dicts of tensors.

    ``fields`` are array datasets (``image``, ``spectrum``, ``ivar``) and ``columns`` scalar
    catalogue columns (``Z_HP``, ``LOGMSTAR``, ...). The HDF5 file is opened on first access in
    each process, not in ``__init__``: an open h5py handle cannot be shared with forked workers.
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

    def __len__(self) -> int:
        return self._length

    def _file(self) -> h5py.File:
        if self._h5 is None:
            self._h5 = open_hdf5(self.path, "r")
        return self._h5

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for {self.path} ({self._length} rows)")
        h5 = self._file()
        item = {"TARGETID": torch.tensor(int(h5["TARGETID"][index]))}
        for name in self.fields:
            item[name] = torch.from_numpy(np.asarray(h5[name][index], dtype=np.float32))
        for name in self.columns:
            item[name] = torch.tensor(float(h5[name][index]), dtype=torch.float32)
        return item

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_h5"] = None  # each worker opens its own handle
        return state
