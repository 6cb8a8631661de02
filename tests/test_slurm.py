"""The workflow on a real one-node SLURM cluster (tests/slurm_cluster.py), and the profile's dry run.

The cluster tests skip, saying why, where SLURM cannot be installed or started (not root, no
apt-get: `make test-deps` installs it); CI runs them.
"""

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from .conftest import SNAKEMAKE, copy_workflow, run_snakemake
from .slurm_cluster import SlurmCluster, unavailable_reason

TRAINING = ("pretrain_spectra", "pretrain_images", "align")
GPU_RULES = (*TRAINING, "embed")  # embed asks for align's gpus
# What the SLURM runs make: the mock shards behind the target-selection checkpoint, the dataset, every
# training rule and the embeddings. The evaluation rules after them are CPU jobs like build_dataset,
# which would add submissions (and minutes) but nothing SLURM does differently; the ci runs of
# test_workflow.py cover them.
SLURM_TARGETS = (
    "results/tables/dataset_cuts.csv", "results/tables/image_backbone_knn.csv",
    "results/embeddings/val.h5", "results/embeddings/test.h5",
)  # fmt: skip
PROFILE = {
    "executor": "slurm",
    "jobs": 4,
    "latency-wait": 10,
    "printshellcmds": True,
    "slurm-status-command": "squeue",  # no slurmdbd, so no sacct: the plugin would poll forever
    "slurm-init-seconds-before-status-checks": 5,
    "slurm-keep-successful-logs": True,
    "default-resources": {"slurm_partition": "debug", "mem_mb": 2000, "runtime": 15, "cpus_per_task": 1},
}


def _resources(dry_run_output: str) -> dict[str, dict[str, str]]:
    """Rule -> its resources, from a dry run's job listing."""
    found = {}
    for block in re.split(r"\n(?=(?:local)?(?:rule|checkpoint) )", dry_run_output):
        name = re.match(r"(?:local)?(?:rule|checkpoint) (\w+):", block)
        line = re.search(r"^\s+resources: (.*)$", block, re.MULTILINE)
        if name and line:
            found[name.group(1)] = dict(item.split("=", 1) for item in line.group(1).split(", "))
    return found


def test_dry_run_of_the_paper_config_asks_for_gpus(tmp_path):
    """`snakemake --profile slurm -n --configfile configs/desi-edr.yaml` needs no cluster."""
    workdir = copy_workflow(tmp_path / "astroclip")
    result = run_snakemake(workdir, "--profile", "slurm", "-n", "--configfile", "configs/desi-edr.yaml")
    resources = _resources(result.stdout + result.stderr)
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    for section, values in yaml.safe_load((workdir / "configs/desi-edr.yaml").read_text()).items():
        config[section] = {**config.get(section, {}), **values} if isinstance(values, dict) else values
    for rule in GPU_RULES:
        assert rule in resources, f"{rule} is not in the dry run:\n{result.stdout[-3000:]}"
        block = "align" if rule == "embed" else rule
        assert int(resources[rule]["gpu"]) == config[block]["gpus"], (rule, resources[rule])
    for rule in GPU_RULES:
        assert int(resources[rule]["gpu"]) >= 1, f"{rule} asks for no GPU on the paper config: {resources[rule]}"
    for rule in TRAINING:
        assert resources[rule]["slurm_extra"] == "--signal=USR1@300", resources[rule]
        assert int(resources[rule]["cpus_per_task"]) >= 8 and int(resources[rule]["runtime"]) >= 240
    assert not any(rule.startswith("download") for rule in resources if resources[rule].get("slurm_partition"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = unavailable_reason()
    if reason:
        pytest.skip(f"no SLURM cluster: {reason}")
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
    except Exception as error:
        cluster.stop()
        raise AssertionError(f"could not stand up the one-node SLURM cluster: {error}") from error
    yield cluster
    cluster.stop()


def test_a_gpu_job_step_sees_its_gpu_under_set_u(cluster, tmp_path):
    """CUDA_VISIBLE_DEVICES and SLURM_STEP_GPUS are set in a step; SLURM_JOB_GPUS need not be."""
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/bash\nset -euo pipefail\n"
        "srun -n1 bash -c 'set -u; echo CUDA=$CUDA_VISIBLE_DEVICES STEP=$SLURM_STEP_GPUS JOB=${SLURM_JOB_GPUS-unset}'\n"
    )
    out = tmp_path / "job.out"
    result = subprocess.run(
        ["sbatch", "--wait", "--gpus=1", "--partition=debug", "--mem=100", f"--output={out}", str(script)],
        env=cluster.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    log = out.read_text() if out.exists() else "(no job output)"
    assert result.returncode == 0, f"sbatch --gpus=1 job failed: {result.stderr}\n{log}"
    assert re.search(r"^CUDA=0 STEP=0 JOB=\S+$", log, re.MULTILINE), log


def _run_under_kill_timeout(args: list[str], cwd: Path, env: dict, timeout: float) -> subprocess.CompletedProcess:
    """Snakemake's SLURM plugin can ignore SIGTERM while it polls: a time-out sends SIGKILL to its group."""
    process = subprocess.Popen(
        args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        raise AssertionError(f"snakemake on SLURM still running after {timeout:.0f} s:\n{stderr[-4000:]}") from None
    return subprocess.CompletedProcess(args, process.returncode, stdout, stderr)


def _gpu_config(workdir: Path) -> str:
    """The ci preset with one GPU asked for by every training block. The cluster's GPU is a stand-in
    (/dev/null), so the training falls back to the CPU, which has to be asked for explicitly."""
    config = yaml.safe_load((workdir / "configs/ci.yaml").read_text())
    for block in TRAINING:
        config[block] = {**config.get(block, {}), "gpus": 1}
    config["allow_cpu_fallback"] = True
    (workdir / "ci-gpu.yaml").write_text(yaml.safe_dump(config))
    return "ci-gpu.yaml"


def _h5_contents(path: Path) -> dict:
    contents = {}
    with h5py.File(path) as h5:
        h5.visititems(lambda name, item: contents.update({name: item[()]}) if isinstance(item, h5py.Dataset) else None)
        contents["/attrs"] = dict(h5.attrs)
    return contents


def _assert_same_h5(a: Path, b: Path) -> None:
    left, right = _h5_contents(a), _h5_contents(b)
    assert left.keys() == right.keys(), f"{b}: datasets differ from the local run's"
    for key in left:
        if key == "/attrs":
            assert {k: str(v) for k, v in left[key].items()} == {k: str(v) for k, v in right[key].items()}, b
        else:
            assert np.array_equal(left[key], right[key]), f"{b}: {key} differs from the local run's"


def _outputs(workdir: Path) -> set[str]:
    return {str(p.relative_to(workdir)) for top in ("results", "resources") for p in (workdir / top).rglob("*")
            if p.is_file() and "/runs/" not in str(p) and "checkpoints" not in p.parts and "logs" not in p.parts
            and "benchmarks" not in p.parts}  # fmt: skip


def _jobs(cluster: SlurmCluster) -> list[dict[str, str]]:
    """Every job slurmctld remembers (MinJobAge=600 keeps finished ones), from `scontrol show job -o`."""
    result = subprocess.run(["scontrol", "show", "job", "-o"], env=cluster.env, capture_output=True, text=True)
    assert result.returncode == 0, f"scontrol show job failed: {result.stderr}"
    return [dict(f.split("=", 1) for f in line.split() if "=" in f) for line in result.stdout.splitlines()]


def _job_log_tails(workdir: Path) -> str:
    logs = sorted((workdir / ".snakemake/slurm_logs").rglob("*.log"))
    return "\n".join(f"== {log}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-25:]) for log in logs)


def test_ci_preset_through_slurm_matches_a_local_run(cluster, tmp_path):
    local = copy_workflow(tmp_path / "local")
    remote = copy_workflow(tmp_path / "slurm")
    profile = tmp_path / "profile"
    profile.mkdir()
    (profile / "config.yaml").write_text(yaml.safe_dump(PROFILE))
    local_args = ["--configfile", "configs/ci.yaml", _gpu_config(local)]
    args = [str(SNAKEMAKE), *SLURM_TARGETS, "--cores", "all", "--profile", str(profile)]
    args += ["--configfile", "configs/ci.yaml"]
    args.append(_gpu_config(remote))

    # the same workflow without SLURM, to compare with, runs meanwhile: most of the SLURM run is waiting
    local_run = subprocess.Popen(
        [str(SNAKEMAKE), *SLURM_TARGETS, "--cores", "1", *local_args], cwd=local, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    start = time.monotonic()
    try:
        result = _run_under_kill_timeout(args, remote, cluster.env, timeout=480)
        took = time.monotonic() - start
        local_out, local_err = local_run.communicate(timeout=300)
    finally:
        if local_run.poll() is None:
            os.killpg(local_run.pid, signal.SIGKILL)
    assert local_run.returncode == 0, f"the local run of the ci preset failed:\n{local_err[-4000:]}"
    assert result.returncode == 0, (
        f"snakemake on SLURM failed after {took:.0f} s:\n{result.stderr[-6000:]}\n"
        f"SLURM job logs:\n{_job_log_tails(remote)}\nslurmctld log:\n{cluster.log_tail('slurmctld')}"
    )

    # the same outputs, and the same data: the dataset files and the mock shards, byte for byte
    assert _outputs(remote) == _outputs(local)
    for split in ("train", "val", "test"):
        _assert_same_h5(local / f"results/data/{split}.h5", remote / f"results/data/{split}.h5")
    shards = sorted((local / "resources/mock").rglob("*.h5"))
    assert len(shards) == 4, shards
    for shard in shards:
        _assert_same_h5(shard, remote / shard.relative_to(local))
    pd.testing.assert_frame_equal(
        pd.read_csv(local / "results/tables/dataset_cuts.csv"), pd.read_csv(remote / "results/tables/dataset_cuts.csv")
    )
    for table in ("spectrum_pretraining_metrics", "image_pretraining_metrics", "alignment_metrics"):
        assert pd.read_csv(remote / f"results/tables/{table}.csv").val_loss.notna().sum() == 2, table

    # every job ran on the cluster, and the GPU rules asked for a GPU (--gpus=1: TresPerJob gres:gpu:1)
    jobs = {job["Comment"].removeprefix("rule_").split("_wildcards_")[0]: job for job in _jobs(cluster)
            if job.get("Comment", "").startswith("rule_") and job.get("WorkDir") == str(remote)}  # fmt: skip
    for rule in GPU_RULES:
        assert rule in jobs, f"{rule} was not submitted to SLURM (jobs: {sorted(jobs)})"
        assert "gpu:1" in jobs[rule].get("TresPerJob", ""), f"{rule}: {jobs[rule].get('TresPerJob')}"
        assert jobs[rule]["JobState"] == "COMPLETED", (rule, jobs[rule]["JobState"])
    assert "gpu" not in jobs["build_dataset"].get("TresPerJob", ""), jobs["build_dataset"]
    logs = list((remote / ".snakemake/slurm_logs/rule_pretrain_spectra").rglob("*.log"))
    assert logs, "no SLURM job log kept for pretrain_spectra"
    print(f"ci preset through SLURM: {took:.0f} s, {len(jobs)} rules submitted")
