"""Pretraining runs, checkpoints, resumes after an interruption, and exports a loadable encoder."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from astroclip_pipeline.evaluate.mask_filling import mask_filling_scores, near_strong_lines
from astroclip_pipeline.models.specformer import load_encoder
from astroclip_pipeline.train.loop import last_checkpoint, prepare_run_dir, resume_checkpoint, warmup_cosine
from astroclip_pipeline.train.spectrum_pretraining import SpectrumPretraining, pretrain_spectra

from .training import CountSteps, PreemptAt, Preempted, assert_same_weights

MODEL = {"preset": "laptop", "embed_dim": 16, "n_layers": 1, "n_heads": 2}
SETTINGS = {"epochs": 3, "batch_size": 16, "warmup_steps": 2, "mask_chunk_length": 4, "lr": 1e-3}


def _run(tiny_dataset, run_dir, callbacks=(), settings=SETTINGS):
    pretrain_spectra(
        tiny_dataset["train"], tiny_dataset["val"], run_dir, run_dir.parent / "encoder.ckpt",
        run_dir.parent / "metrics.csv",
        MODEL, settings, callbacks=callbacks,
    )  # fmt: skip


def test_interrupted_run_resumes_from_the_saved_step(tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(Preempted):
        _run(tiny_dataset, run_dir, callbacks=[PreemptAt(7)])
    saved = torch.load(last_checkpoint(run_dir), weights_only=False)
    assert saved["global_step"] == 7
    assert not (tmp_path / "encoder.ckpt").exists()  # no output until training finished

    counter = CountSteps()
    _run(tiny_dataset, run_dir, callbacks=[counter])
    final = torch.load(last_checkpoint(run_dir), weights_only=False)
    steps_per_epoch = len(
        torch.utils.data.DataLoader(range(_n_rows(tiny_dataset["train"])), batch_size=16, drop_last=True)
    )
    assert final["global_step"] == 3 * steps_per_epoch
    assert counter.steps == 3 * steps_per_epoch - 7  # only the steps not yet done
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics.val_loss.notna().sum() >= 3  # both runs' rows are kept


def test_changed_settings_start_afresh(tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    _run(tiny_dataset, run_dir, settings={**SETTINGS, "epochs": 1})
    counter = CountSteps()
    _run(tiny_dataset, run_dir, callbacks=[counter], settings={**SETTINGS, "epochs": 1, "lr": 5e-4})
    assert counter.steps > 0  # not resumed from a run made with another learning rate


def test_the_same_seed_trains_the_same_encoder(tiny_dataset, tmp_path):
    # two runs in one process: the second starts with torch's generator wherever the first left it,
    # as two processes start from different seeds; the run's seed must fix the initial weights
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        _run(tiny_dataset, tmp_path / name / "run", settings={**SETTINGS, "epochs": 1})
    assert_same_weights(tmp_path / "a" / "encoder.ckpt", tmp_path / "b" / "encoder.ckpt")


def test_encoder_file_loads_and_learns(tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    # with the default run's line emphasis: the validation loss, the plain masked MSE, still falls
    settings = {
        **SETTINGS,
        "epochs": 8,
        "lr": 3e-3,
        "warmup_steps": 10,
        "line_emphasis": 1.0,
        "line_emphasis_ramp": 0.5,
    }
    _run(tiny_dataset, run_dir, settings=settings)
    val_loss = pd.read_csv(tmp_path / "metrics.csv").val_loss.dropna().to_numpy()
    assert val_loss[-1] < 0.9 * val_loss[0]
    model = load_encoder(tmp_path / "encoder.ckpt")
    assert model.config.embed_dim == 16 and not model.training
    scores = mask_filling_scores(tmp_path / "encoder.ckpt", tiny_dataset["val"], n_chunks=6, chunk_length=4).set_index(
        "method"
    )
    assert set(scores.index) == {"transformer", "linear interpolation", "noise floor"}
    # with ~80 training spectra the model cannot be expected to beat interpolation (the workflow's
    # default run, with 3,000, does: see BENCHMARKS.md); the noise floor is below both
    assert scores.loc["noise floor", "masked_mse"] < scores[["masked_mse"]].drop("noise floor").min().item()
    # the near-lines score averages a subset of the same masked pixels
    assert 0 < scores.loc["transformer", "n_masked_pixels_near_lines"] < scores.loc["transformer", "n_masked_pixels"]
    assert scores.loc["linear interpolation", "near_lines_relative_to_interpolation"] == 1.0
    with pytest.raises(KeyError, match="not a spectrum-encoder file"):
        torch.save({"weights": 1}, tmp_path / "other.pt")
        load_encoder(tmp_path / "other.pt")


def test_line_emphasis_ramps_in_over_the_configured_share_of_training():
    module = SpectrumPretraining(
        {"embed_dim": 16, "n_layers": 1, "n_heads": 2}, {"line_emphasis": 2.0, "line_emphasis_ramp": 0.25}
    )
    trainer = SimpleNamespace(estimated_stepping_batches=200, global_step=0)
    module._trainer = trainer
    emphasis = []
    for step in (0, 25, 50, 100, 199):
        trainer.global_step = step
        emphasis.append(module.line_emphasis_now())
    assert emphasis == pytest.approx([0.0, 1.0, 2.0, 2.0, 2.0])  # full after a quarter of the 200 steps
    module.settings = module.settings.__class__(line_emphasis=2.0, line_emphasis_ramp=0.0)
    trainer.global_step = 0
    assert module.line_emphasis_now() == 2.0  # no ramp: from the first step


def test_warmup_then_cosine():
    factors = [warmup_cosine(step, 10, 110, 0.1) for step in range(111)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[60] == pytest.approx(0.55) and factors[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))


def _n_rows(path):
    import h5py

    with h5py.File(path) as h5:
        return len(h5["TARGETID"])


def _fill(run_dir):
    """What a run leaves: its checkpoints, logs and an hpc checkpoint of SLURM's warning signal."""
    for name in ("checkpoints/last.ckpt", "logs/version_0/metrics.csv", "hpc_ckpt_1.ckpt"):
        (run_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (run_dir / name).write_text("a run")


def test_what_a_rerun_resumes_and_what_it_empties(tmp_path):
    run_dir = tmp_path / "run"
    identity = {"settings": {"lr": 1e-3, "num_workers": 0, "gpus": 0}, "inputs": {"train.h5": [1, 2]}, "code": "a"}
    prepare_run_dir(run_dir, identity)
    _fill(run_dir)
    # how to run, not what: kept, to resume
    prepare_run_dir(run_dir, {**identity, "settings": {"lr": 1e-3, "num_workers": 8, "gpus": 2}})
    assert resume_checkpoint(run_dir) is not None and (run_dir / "logs").exists()
    # another learning rate, other inputs, other library code: nothing left to resume from
    for changed in ({"settings": {"lr": 5e-4}}, {"inputs": {"train.h5": [1, 3]}}, {"code": "b"}):
        _fill(run_dir)
        prepare_run_dir(run_dir, {**identity, **changed})
        assert sorted(p.name for p in run_dir.iterdir()) == ["settings.json"], changed
    # checkpoints without a record of what made them are not trusted either
    (run_dir / "settings.json").unlink()
    _fill(run_dir)
    prepare_run_dir(run_dir, identity)
    assert resume_checkpoint(run_dir) is None


def test_near_strong_lines_marks_the_pixels_around_each_redshifted_line():
    wavelength = np.arange(3600.0, 9800.0, 3.2)
    near = near_strong_lines(wavelength, np.array([0.1, 0.0])).numpy()
    # z = 0.1: Hα at 7219.1 Å observed, window ±5.5 Å observed (5 Å rest); [O II] 3726.0-3728.8 -> 4098.6-4101.7
    halpha = np.abs(wavelength - 6562.8 * 1.1) <= 5.0 * 1.1
    assert near[0][halpha].all() and halpha.sum() == 3
    assert near[0][np.abs(wavelength - 4100.0) < 3.0].all()
    assert not near[0][np.abs(wavelength - 7000.0) < 50.0].any()  # no strong line between 6920 and 7100 Å
    # z = 0: Hα at 6562.8 Å itself; the two rows differ
    assert near[1][np.abs(wavelength - 6562.8) <= 5.0].all() and not near[1][halpha].any()
