"""Callbacks that tests use to interrupt and watch training runs, and a comparison of saved weights."""

import torch
from lightning.pytorch.callbacks import Callback


class Preempted(RuntimeError):
    pass


class PreemptAt(Callback):
    """Raise as a scheduler's kill would, once ``step`` optimizer steps are done."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, *args):
        if trainer.global_step == self.step:
            raise Preempted(f"simulated preemption at step {self.step}")


class CountSteps(Callback):
    def __init__(self):
        self.steps = 0

    def on_train_batch_end(self, *args):
        self.steps += 1


def saved_tensors(path) -> dict:
    """Every tensor of a saved model file (nested dictionaries flattened to dotted keys)."""

    def walk(value, prefix):
        if torch.is_tensor(value):
            yield prefix, value
        elif isinstance(value, dict):
            for key, item in value.items():
                yield from walk(item, f"{prefix}.{key}" if prefix else str(key))

    return dict(walk(torch.load(path, map_location="cpu", weights_only=False), ""))


def assert_same_weights(path_a, path_b) -> None:
    """Two saved models hold the same tensors, bit for bit."""
    a, b = saved_tensors(path_a), saved_tensors(path_b)
    assert a.keys() == b.keys() and a
    differing = [key for key in a if not torch.equal(a[key], b[key])]
    assert not differing, f"{len(differing)} of {len(a)} tensors differ, e.g. {differing[:3]}"
