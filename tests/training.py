"""Callbacks that tests use to interrupt and watch training runs."""

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
