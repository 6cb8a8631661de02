"""Training killed by a real signal resumes from its checkpoint; SIGUSR1 under SLURM saves and requeues;
a rerun resumes only a run of the same settings; a GPU asked for and not there stops the run.

Each test runs spectrum pretraining in a child process, sends it a signal mid-epoch, and reruns it.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pandas as pd
import torch

from astroclip_pipeline.train.loop import last_checkpoint

MODEL = {"preset": "laptop", "embed_dim": 16, "n_layers": 1, "n_heads": 2}
SETTINGS = {"epochs": 3, "batch_size": 16, "warmup_steps": 2, "mask_chunk_length": 4, "lr": 1e-3}
MARK_STEP = 7  # in the second epoch: the tiny training split has 5 steps per epoch

# The child: trains, and from MARK_STEP on writes a marker and slows down so that the signal lands
# mid-epoch; on a rerun (no marker asked for) it counts the steps it trains.
CHILD = """
import json, sys, time
from pathlib import Path
from lightning.pytorch.callbacks import Callback
from astroclip_pipeline.train.spectrum_pretraining import pretrain_spectra

args = json.loads(sys.argv[1])

class Watch(Callback):
    steps = 0
    def on_train_batch_end(self, trainer, *rest):
        Watch.steps += 1
        if args["mark"] is not None and trainer.global_step >= args["mark"]:
            Path(args["marker"]).write_text(str(trainer.global_step))
            time.sleep(0.5)

try:
    pretrain_spectra(args["train"], args["val"], args["run_dir"], args["encoder"], args["metrics"],
                     args["model"], args["settings"], callbacks=[Watch()], cpu_fallback=args["cpu_fallback"])
finally:
    Path(args["steps"]).write_text(str(Watch.steps))
"""


def _start(
    tiny_dataset,
    tmp_path: Path,
    mark: int | None,
    env: dict | None = None,
    settings: dict = SETTINGS,
    cpu_fallback: bool = False,
) -> tuple[subprocess.Popen, dict]:
    args = {
        "train": str(tiny_dataset["train"]), "val": str(tiny_dataset["val"]), "run_dir": str(tmp_path / "run"),
        "encoder": str(tmp_path / "encoder.ckpt"), "metrics": str(tmp_path / "metrics.csv"), "model": MODEL,
        "settings": settings, "mark": mark, "marker": str(tmp_path / "marker"), "steps": str(tmp_path / "steps"),
        "cpu_fallback": cpu_fallback,
    }  # fmt: skip
    (tmp_path / "marker").unlink(missing_ok=True)
    process = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(args)], cwd=tmp_path, env=env or _clean_env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    return process, args


def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}


def _wait_for_marker(process: subprocess.Popen, marker: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if process.poll() is not None:
            raise AssertionError(
                f"training exited ({process.returncode}) before step {MARK_STEP}:\n{process.stdout.read()}"
            )
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"training did not reach step {MARK_STEP} within {timeout:.0f} s")
        time.sleep(0.05)


def _finish(process: subprocess.Popen, timeout: float = 120) -> tuple[int, str]:
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        raise AssertionError(f"training still running after {timeout:.0f} s") from None
    return process.returncode, out


def _steps_per_epoch(tiny_dataset) -> int:
    with h5py.File(tiny_dataset["train"]) as h5:
        return len(h5["TARGETID"]) // SETTINGS["batch_size"]


def _step_of(path: Path) -> int:
    return torch.load(path, weights_only=False, map_location="cpu")["global_step"]


def _rerun_and_check(
    tiny_dataset, tmp_path: Path, resumed_from: int, env: dict | None = None, settings: dict = SETTINGS
) -> None:
    process, args = _start(tiny_dataset, tmp_path, mark=None, env=env, settings=settings)
    code, out = _finish(process)
    assert code == 0, f"rerun failed ({code}):\n{out[-3000:]}"
    total = SETTINGS["epochs"] * _steps_per_epoch(tiny_dataset)
    assert _step_of(last_checkpoint(args["run_dir"])) == total
    trained = int(Path(args["steps"]).read_text())
    assert trained == total - resumed_from, f"rerun trained {trained} steps, expected {total} - {resumed_from}"
    assert Path(args["encoder"]).exists()
    assert pd.read_csv(args["metrics"]).val_loss.notna().sum() >= SETTINGS["epochs"]


def test_sigterm_mid_epoch_saves_the_step_and_the_rerun_resumes_there(tiny_dataset, tmp_path):
    process, args = _start(tiny_dataset, tmp_path, mark=MARK_STEP)
    _wait_for_marker(process, tmp_path / "marker")
    process.send_signal(signal.SIGTERM)
    _finish(process)  # Lightning's SIGTERMException is a SystemExit: the exit status may be 0
    assert not Path(args["encoder"]).exists(), "training ignored SIGTERM and wrote the encoder"
    saved = _step_of(last_checkpoint(args["run_dir"]))
    per_epoch = _steps_per_epoch(tiny_dataset)
    assert saved >= MARK_STEP and saved % per_epoch != 0, f"last.ckpt at step {saved}: not the mid-epoch step"
    _rerun_and_check(tiny_dataset, tmp_path, resumed_from=saved)


def test_sigkill_mid_epoch_resumes_from_the_last_epoch_checkpoint(tiny_dataset, tmp_path):
    process, args = _start(tiny_dataset, tmp_path, mark=MARK_STEP)
    _wait_for_marker(process, tmp_path / "marker")
    process.send_signal(signal.SIGKILL)
    code, _ = _finish(process)
    assert code == -signal.SIGKILL
    per_epoch = _steps_per_epoch(tiny_dataset)
    saved = _step_of(last_checkpoint(args["run_dir"]))
    assert saved == (MARK_STEP // per_epoch) * per_epoch > 0, f"last.ckpt at step {saved}, not the epoch's end"
    _rerun_and_check(tiny_dataset, tmp_path, resumed_from=saved)


def _slurm_env(tmp_path: Path) -> tuple[dict, Path]:
    """The environment of a SLURM job step, with a stand-in `scontrol` that records its calls."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "scontrol-calls"
    scontrol = bin_dir / "scontrol"
    scontrol.write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    scontrol.chmod(0o755)
    env = {**_clean_env(), "SLURM_JOB_ID": "4242", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "pretrain_spectra"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return env, calls


def _warn_with_sigusr1(process: subprocess.Popen, calls: Path, run_dir: str) -> Path:
    """SLURM's warning signal: Lightning saves hpc_ckpt_N.ckpt and calls `scontrol requeue`."""
    process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 60
    while not calls.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert calls.exists(), "SIGUSR1 did not make Lightning run `scontrol requeue`"
    assert calls.read_text().split() == ["requeue", "4242"]
    hpc = sorted(Path(run_dir).glob("hpc_ckpt_*.ckpt"))
    assert hpc and _step_of(hpc[-1]) >= MARK_STEP, f"no hpc checkpoint at step >= {MARK_STEP}: {hpc}"
    return hpc[-1]


def test_sigusr1_under_slurm_saves_a_checkpoint_and_requeues_the_job(tiny_dataset, tmp_path):
    """Lightning's SLURM support, as fit() sets it up when SLURM_JOB_ID is set (scontrol is a stand-in)."""
    env, calls = _slurm_env(tmp_path)
    process, args = _start(tiny_dataset, tmp_path, mark=MARK_STEP, env=env)
    _wait_for_marker(process, tmp_path / "marker")
    hpc = _warn_with_sigusr1(process, calls, args["run_dir"])
    process.send_signal(signal.SIGTERM)  # what SLURM sends when it requeues the job
    _finish(process)
    assert not Path(args["encoder"]).exists(), "training finished although SLURM requeued it"
    saved = _step_of(last_checkpoint(args["run_dir"]))
    assert saved >= _step_of(hpc)
    _rerun_and_check(tiny_dataset, tmp_path, resumed_from=saved)


def test_changed_settings_after_sigusr1_start_afresh_under_slurm(tiny_dataset, tmp_path):
    """SIGUSR1 leaves hpc_ckpt_N.ckpt, the job then dies (SIGKILL: no last.ckpt of its step), and the
    rule reruns in a SLURM job with another learning rate: it must train every step from scratch,
    although Lightning under SLURM resumes from any hpc checkpoint it finds."""
    env, calls = _slurm_env(tmp_path)
    process, args = _start(tiny_dataset, tmp_path, mark=MARK_STEP, env=env)
    _wait_for_marker(process, tmp_path / "marker")
    _warn_with_sigusr1(process, calls, args["run_dir"])
    process.send_signal(signal.SIGKILL)
    _finish(process)
    _rerun_and_check(tiny_dataset, tmp_path, resumed_from=0, env=env, settings={**SETTINGS, "lr": 5e-4})
    assert not list(Path(args["run_dir"]).glob("hpc_ckpt_*.ckpt")), "the old run's hpc checkpoint is still there"


def test_a_rerun_changing_only_how_to_run_resumes_from_the_newest_checkpoint(tiny_dataset, tmp_path):
    """SIGUSR1, then the job dies before its SIGTERM checkpoint: hpc_ckpt_N.ckpt is the newest, and a
    rerun that changes only the data-loader workers (how to run, not what) resumes from it."""
    env, calls = _slurm_env(tmp_path)
    process, args = _start(tiny_dataset, tmp_path, mark=MARK_STEP, env=env)
    _wait_for_marker(process, tmp_path / "marker")
    hpc = _warn_with_sigusr1(process, calls, args["run_dir"])
    process.send_signal(signal.SIGKILL)
    _finish(process)
    saved = _step_of(hpc)
    assert saved > _step_of(last_checkpoint(args["run_dir"])), "last.ckpt is not older than the hpc checkpoint"
    _rerun_and_check(tiny_dataset, tmp_path, resumed_from=saved, settings={**SETTINGS, "num_workers": 1})


def test_a_gpu_asked_for_on_a_node_without_one_stops_at_once(tiny_dataset, tmp_path):
    """gpus: 1 where CUDA sees no device (CUDA_VISIBLE_DEVICES empty) is an error naming the rule, the
    config key and what CUDA reports, before any training or file; allow_cpu_fallback trains on."""
    env = {**_clean_env(), "CUDA_VISIBLE_DEVICES": ""}
    process, args = _start(tiny_dataset, tmp_path, mark=None, env=env, settings={**SETTINGS, "gpus": 1})
    code, out = _finish(process)
    assert code != 0, f"training with gpus: 1 and no GPU did not stop:\n{out[-2000:]}"
    assert "RuntimeError: rule pretrain_spectra: config key 'pretrain_spectra.gpus' asks for 1 GPU(s)" in out, out
    assert "torch.cuda.is_available() = False" in out and "CUDA_VISIBLE_DEVICES=" in out, out
    assert "allow_cpu_fallback" in out
    assert not Path(args["run_dir"]).exists() and int(Path(args["steps"]).read_text()) == 0
