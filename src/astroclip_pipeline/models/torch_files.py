"""Reading torch files (model files, checkpoints) with errors that name the file and the fix, and
checkpoints of other code (published weights) without running what their pickles name."""

import collections
import pickle
import types
from pathlib import Path

import torch


def read_torch_file(
    path: str | Path, map_location: str | torch.device = "cpu", weights_only: bool = True, pickle_module=None
):
    """``torch.load(path, ...)``; a truncated or empty file raises an error that names it.

    torch reports a file cut short (an interrupted copy, a full disk) as "PytorchStreamReader failed
    reading zip archive", "OSError: [Errno 22] Invalid argument" (a seek past its end) or a bare
    EOFError, none naming the file. Other errors (a pickle the safe loader refuses, a missing
    file) pass unchanged.

    Raises:
        ValueError: ``path`` is empty or truncated.
    """
    try:
        extra = {"pickle_module": pickle_module} if pickle_module is not None else {}
        return torch.load(path, map_location=map_location, weights_only=weights_only, **extra)
    except (RuntimeError, EOFError, OSError) as err:
        if isinstance(err, RuntimeError) and "PytorchStreamReader" not in str(err):
            raise
        if isinstance(err, OSError) and err.filename is not None:
            raise  # a missing or unreadable file: the error names it already
        size = Path(path).stat().st_size
        raise ValueError(
            f"{path}: not a complete torch file ({size} bytes; {type(err).__name__}: {str(err)[:120] or 'empty'}). "
            "It was cut short (an interrupted copy, a full disk): copy it again, or remake it by "
            "rerunning the rule that writes it (snakemake --forcerun <rule>)."
        ) from err


class _Opaque:
    """Stands in for every object of a class or function a checkpoint names beyond tensors: it is
    built without importing anything, and whatever state the file gives it is dropped."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs) -> "_Opaque":
        return _Opaque()

    def __setstate__(self, state) -> None:
        pass

    def __setitem__(self, key, value) -> None:  # a pickled dict subclass (Lightning's AttributeDict)
        pass

    def append(self, item) -> None:  # a pickled list subclass
        pass

    def extend(self, items) -> None:
        pass


class CheckpointUnpickler(pickle.Unpickler):
    """An unpickler that builds tensors and plain containers and nothing else.

    Lightning checkpoints pickle more than tensors: hyper-parameters (the official AstroCLIP
    checkpoint pickles its encoder modules there, classes of the ``astroclip`` and ``dinov2``
    packages), callback states, numpy scalars. ``pickle``'s own ``find_class`` would import each
    named module and could run any code the file names. Here every global outside ``ALLOWED`` (what
    torch needs to rebuild a tensor or a parameter) becomes an ``_Opaque`` placeholder class that
    keeps only its name: nothing is imported, nothing the file names is called.
    torch's own ``weights_only`` loader cannot do this: it stops at the first unknown class.
    """

    ALLOWED = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
        ("torch", "Size"): torch.Size,
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[(module, name)]
        return type(name, (_Opaque,), {"__module__": f"opaque:{module}"})


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"):
    """A checkpoint file whose pickle holds more than tensors (a Lightning checkpoint of other code):
    its tensors and plain containers; every other object is an inert placeholder (``CheckpointUnpickler``).

    ``torch.load`` reads the zip container and the tensor data; the pickle goes through
    ``CheckpointUnpickler`` (``weights_only=False`` is what torch requires to accept a
    ``pickle_module``; the allow-list, not pickle's default, decides what is built).

    Raises:
        ValueError: ``path`` is empty or truncated (as ``read_torch_file``).
    """
    return read_torch_file(path, map_location, weights_only=False, pickle_module=_restricted_pickle)


# torch.load takes a module-like ``pickle_module`` with an ``Unpickler`` (and a ``__name__``).
_restricted_pickle = types.SimpleNamespace(__name__="checkpoint_pickle", Unpickler=CheckpointUnpickler, load=None)
