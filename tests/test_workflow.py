"""Snakemake on the ci preset, run as a user would: outputs, report, config errors, reruns."""

import re
import shutil
import subprocess
from pathlib import Path

import h5py
import pandas as pd
import pytest
import yaml

from .conftest import copy_workflow, run_snakemake

pytestmark = pytest.mark.workflow
CI = ("--configfile", "configs/ci.yaml")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A copy of the workflow that has run the ci preset to the end and built its report."""
    workdir = copy_workflow(tmp_path_factory.mktemp("run") / "astroclip")
    run_snakemake(workdir, *CI)
    run_snakemake(workdir, *CI, "--report", "results/report.html")
    return workdir


def _extra_config(workdir: Path, name: str, values: dict) -> str:
    path = workdir / f"{name}.yaml"
    base = yaml.safe_load((workdir / "configs/ci.yaml").read_text())
    for section, entries in values.items():
        base.setdefault(section, {}).update(entries) if isinstance(entries, dict) else base.update({section: entries})
    path.write_text(yaml.safe_dump(base))
    return path.name


def test_ci_run_writes_dataset_and_overview(workdir):
    for split in ("train", "val", "test"):
        with h5py.File(workdir / f"results/data/{split}.h5") as h5:
            assert len(h5["TARGETID"]) > 0
            assert h5["image"].shape[1:] == (3, 32, 32)
            assert h5["spectrum"].shape[1] == 7781 // 8
    counts = pd.read_csv(workdir / "results/tables/dataset_cuts.csv")
    assert counts.iloc[0]["remaining"] == 200
    for figure in ("cutout_gallery", "example_spectra", "distributions"):
        png = workdir / f"results/figures/overview/{figure}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    logs = list((workdir / "results/logs").rglob("*.log"))
    assert len(logs) >= 7


def test_ci_run_pretrains_the_spectrum_transformer(workdir):
    import torch

    encoder = torch.load(workdir / "results/models/spectrum_encoder.ckpt", weights_only=True)
    assert encoder["config"]["embed_dim"] == 32 and encoder["config"]["n_layers"] == 2  # ci overrides
    scores = pd.read_csv(workdir / "results/tables/mask_filling_mse.csv").set_index("method")
    assert list(scores.index) == ["transformer", "linear interpolation", "noise floor"]
    assert (scores.masked_mse > 0).all()
    metrics = pd.read_csv(workdir / "results/tables/spectrum_pretraining_metrics.csv")
    assert metrics.val_loss.notna().sum() == 2  # one per epoch
    for figure in ("spectrum_loss", "mask_filling"):
        assert (workdir / f"results/figures/pretrain/{figure}.png").stat().st_size > 10_000


def test_ci_run_pretrains_the_image_encoder(workdir):
    import torch

    encoder = torch.load(workdir / "results/models/image_encoder.ckpt", weights_only=True)
    assert encoder["config"]["width"] == 8 and encoder["crop"] == 24  # ci overrides
    assert encoder["source"].startswith("pretrain_images")
    metrics = pd.read_csv(workdir / "results/tables/image_pretraining_metrics.csv")
    assert metrics.val_loss.notna().sum() == 2
    knn = pd.read_csv(workdir / "results/tables/image_backbone_knn.csv").set_index("features")
    assert list(knn.index) == ["pretrained image backbone", "same network, random weights", "g, r, z magnitudes"]
    assert knn["dimensions"].tolist() == [64, 64, 3]
    assert (knn[["R2 Z_HP", "R2 LOGMSTAR"]] <= 1).all().all()
    assert (workdir / "results/figures/pretrain/image_loss.png").stat().st_size > 10_000


def test_ci_run_aligns_and_embeds(workdir):
    import numpy as np

    for split in ("val", "test"):
        with (
            h5py.File(workdir / f"results/embeddings/{split}.h5") as h5,
            h5py.File(workdir / f"results/data/{split}.h5") as data,
        ):
            assert np.array_equal(h5["TARGETID"][()], data["TARGETID"][()])
            for key in ("image_embedding", "spectrum_embedding"):
                assert h5[key].shape == (len(data["TARGETID"]), 128)
                assert np.allclose(np.linalg.norm(h5[key][()], axis=1), 1, atol=1e-5)
    retrieval = pd.read_csv(workdir / "results/tables/retrieval.csv").set_index("direction")
    assert list(retrieval.index) == ["spectrum -> image", "image -> spectrum"]
    assert (retrieval["recall@10"] >= retrieval["recall@5"]).all()
    assert pd.read_csv(workdir / "results/tables/alignment_metrics.csv").val_loss.notna().sum() == 2
    assert (workdir / "results/figures/align/alignment_loss.png").stat().st_size > 10_000


VIT = {
    "image_encoder": {"architecture": "vit", "vit": {"embed_dim": 32, "depth": 2, "n_heads": 2}},
    "pretrain_dino": {
        "epochs": 2, "batch_size": 16, "local_crops": 2, "local_crop": 16, "n_prototypes": 64,
        "head_hidden_dim": 32, "head_bottleneck_dim": 16, "warmup_teacher_temp_epochs": 1,
    },
}  # fmt: skip


def test_ci_run_with_a_vit_pretrains_it_by_dino_and_aligns_it(workdir, tmp_path):
    """The v2 image path on the ci preset, up to the embeddings: a copy of the finished ci run whose
    image encoder is removed, so that only the image stages and what follows them run again."""
    import torch

    vitdir = copy_workflow(tmp_path / "astroclip")
    for folder in ("resources", "results"):
        shutil.copytree(workdir / folder, vitdir / folder)
    extra = _extra_config(vitdir, "vit", VIT)
    targets = ["results/embeddings/test.h5", "results/tables/image_backbone_knn.csv"]
    targets += ["results/figures/pretrain/image_loss.png", "results/figures/pretrain/vit_attention.png"]
    # -R: the ResNet's outputs downstream are present and newer than their inputs; the forced
    # pretrain_dino makes everything after it rerun
    jobs = _executed_jobs(run_snakemake(vitdir, *targets, "-R", "pretrain_dino", "--configfile", extra))
    assert jobs.get("pretrain_dino") == 1 and "pretrain_images" not in jobs
    assert {"align", "embed", "image_backbone_knn", "plot_dino_pretraining", "plot_vit_attention"} <= set(jobs)
    assert not {"build_dataset", "pretrain_spectra"} & set(jobs)

    encoder = torch.load(vitdir / "results/models/image_encoder.ckpt", weights_only=True)
    assert encoder["architecture"] == "vit" and encoder["source"].startswith("pretrain_dino")
    assert encoder["config"]["embed_dim"] == 32 and encoder["config"]["image_size"] == 24
    metrics = pd.read_csv(vitdir / "results/tables/image_pretraining_metrics.csv")
    assert metrics.train_ibot_step.notna().sum() > 0 and metrics.val_loss.notna().sum() == 2
    knn = pd.read_csv(vitdir / "results/tables/image_backbone_knn.csv").set_index("features")
    assert knn["dimensions"].tolist() == [32, 32, 3]
    with h5py.File(vitdir / "results/embeddings/test.h5") as h5:
        assert h5["image_embedding"].shape[1] == h5["spectrum_embedding"].shape[1] == 128

    # published AstroDINO weights (a small stand-in with its key layout) replace pretrain_dino
    from astroclip_pipeline.models.vit import vit_config_of

    from .test_astrodino import astrodino_checkpoint

    model = {**VIT["image_encoder"], "preset": "laptop", "crop": 24, "weights": "astrodino.ckpt"}
    model["vit"] = {"embed_dim": 16, "depth": 4, "n_heads": 2}
    torch.save(astrodino_checkpoint(vit_config_of(model)), vitdir / "astrodino.ckpt")
    extra = _extra_config(vitdir, "astrodino", {**VIT, "image_encoder": model})
    encoder_file = "results/models/image_encoder.ckpt"
    result = run_snakemake(vitdir, encoder_file, "-R", "import_image_encoder", "--configfile", extra)
    assert _executed_jobs(result) == {"import_image_encoder": 1}
    encoder = torch.load(vitdir / "results/models/image_encoder.ckpt", weights_only=True)
    assert encoder["architecture"] == "vit" and encoder["source"].startswith("published AstroDINO")


def test_comparing_image_encoders_adds_the_other_backbones_and_reruns_nothing_of_this_run(workdir):
    """evaluation.compare_image_encoders on the finished ci run (ResNet/MoCo): the ViT is pretrained
    by DINO under results/comparison/, a random ViT written, both aligned and embedded, one table;
    this run's own encoder, alignment and embeddings are reused. (The rules ran end to end on this
    preset with a ViT run; the table's arithmetic is tested in test_encoder_comparison.py.)"""
    # an overlay on the ci preset, not a rewritten copy of it: a rewritten YAML orders the keys of a
    # block differently, and Snakemake sees changed params everywhere
    (workdir / "compare.yaml").write_text("evaluation: {compare_image_encoders: true}\n")
    plan = run_snakemake(workdir, *CI, "compare.yaml", "-n").stdout
    table = plan.split("Job stats:", 1)[-1].split("\n\n", 1)[0]
    jobs = {name: int(n) for name, n in re.findall(r"^(\w+)\s+(\d+)$", table, re.MULTILINE)}
    assert jobs == {
        "pretrain_dino": 1, "random_image_encoder": 1, "compare_align": 2, "compare_embed": 4,
        "image_encoder_comparison": 1, "all": 1, "total": 10,
    }  # fmt: skip
    assert "output: results/comparison/dino/image_encoder.ckpt" in plan
    assert "results/models/image_encoder.ckpt" in plan.split("rule image_encoder_comparison:", 1)[1]


def test_ci_run_predicts_properties(workdir):
    r2 = pd.read_csv(workdir / "results/tables/property_r2.csv").set_index("method")
    assert "spectrum embedding + k-NN" in r2.index and "photometry + MLP" in r2.index
    assert {"R2 Z_HP", "R2 LOGMSTAR", "R2 SSFR", "R2 AGE", "R2 Z_MW"} <= set(r2.columns)
    assert (r2.filter(like="R2 ").drop(columns=[c for c in r2.columns if "different data" in c]) <= 1).all().all()
    baselines = r2.loc[["ResNet18 (supervised, images)", "Conv+Att (supervised, spectra)"]]  # trained, not k-NN
    assert (baselines.protocol == "supervised").all() and baselines["R2 Z_HP"].notna().all()
    photoz = pd.read_csv(workdir / "results/tables/photoz_metrics.csv")
    assert (photoz.sigma_nmad > 0).all() and photoz.outlier_fraction.between(0, 1).all()
    for mode in ("image", "spectrum", "cross"):
        assert (workdir / f"results/figures/evaluation/predicted_vs_true_{mode}.png").stat().st_size > 10_000


def test_ci_run_maps_the_embedding_space(workdir):
    figures = ["retrieval/retrieval_examples", "retrieval/spectral_retrieval", "structure/umap",
               "structure/dbscan_umap", "structure/dbscan_cutouts", "structure/kmeans_silhouette",
               "structure/kmeans_umap", "structure/kmeans_spectra", "structure/kmeans_cutouts"]  # fmt: skip
    for figure in figures:
        # small: on the ci preset DBSCAN may find no cluster, and the gallery then says so in one panel
        assert (workdir / f"results/figures/{figure}.png").stat().st_size > 2_000, figure
    artefacts = pd.read_csv(workdir / "results/tables/dbscan_artefacts.csv")
    assert artefacts.best_match.sum() <= 1 and artefacts.precision.between(0, 1).all()


def test_ci_run_classifies_morphology_and_fills_the_v2_headline(workdir):
    votes = pd.read_csv(workdir / "resources/mock/gz_decals_volunteers_5.csv")
    assert len(votes) == 200 and "bar_weak_debiased" in votes.columns
    metrics = pd.read_csv(workdir / "results/tables/morphology_metrics.csv")
    assert set(metrics.features) == {
        "AstroCLIP image embedding", "image backbone before alignment", "photometry (g, r, z magnitudes)",
        "adaptive moments (r-band axis ratio, size) and magnitudes",
    }  # fmt: skip
    assert "smooth-or-featured" in set(metrics.question) and metrics.accuracy.between(0, 1).all()
    cuts = pd.read_csv(workdir / "results/tables/morphology_cuts.csv").set_index("step").galaxies
    assert cuts.iloc[0] > 50 and cuts.iloc[0] >= cuts.iloc[1] >= cuts.iloc[2] == cuts.iloc[3] + cuts.iloc[4]
    figures = ("morphology/scores", "morphology/confusion", "morphology/surest_galaxies", "overview/morphology_gallery")
    for figure in figures:
        assert (workdir / f"results/figures/{figure}.png").stat().st_size > 10_000, figure
    headline = pd.read_csv(workdir / "results/tables/v2_headline.csv").set_index("model")
    assert headline.loc["AstroCLIP image embedding", ["redshift R2", "morphology accuracy"]].notna().all()
    assert headline.loc[["ResNet18, supervised", "Conv+Att, supervised"], "redshift R2"].notna().all()
    html = (workdir / "results/report.html").read_text(errors="replace")
    assert "AstroCLIP v2 headline table, ours beside the published values" in html  # on the top page


def test_report_holds_the_overview(workdir):
    html = (workdir / "results/report.html").read_text(errors="replace")
    names = ("cutout_gallery.png", "example_spectra.png", "distributions.png", "dataset_cuts.csv",
             "spectrum_loss.png", "mask_filling.png", "mask_filling_mse.csv", "image_loss.png",
             "image_backbone_knn.csv", "alignment_loss.png", "retrieval.csv", "property_r2.csv",
             "photoz_metrics.csv", "predicted_vs_true_spectrum.png", "umap.png", "kmeans_umap.png",
             "retrieval_examples.png")  # fmt: skip
    for name in names:
        assert name in html, name


def test_second_run_has_nothing_to_do(workdir):
    assert "Nothing to be done" in run_snakemake(workdir, *CI, "-n").stdout


def _planned_jobs(result) -> set[str]:
    """The rules a dry run (-n) would run, from its job table."""
    table = result.stdout.split("Job stats:", 1)[-1].split("\n\n", 1)[0]
    return {m for m in re.findall(r"^(\w+)\s+\d+$", table, re.MULTILINE)} - {"all", "total"}


def test_a_library_change_reruns_the_rules_that_run_it_and_nothing_upstream(workdir):
    """The k-NN's code changes (a git pull, an edit): the property predictions and what is made
    from them rerun, and so do the other rules whose scripts import it (the image backbone's k-NN,
    the supervised baselines); nothing upstream."""
    knn = workdir / "src/astroclip_pipeline/evaluate/knn.py"
    source = knn.read_text()
    try:
        knn.write_text(source.replace('weights="distance"', 'weights="uniform"'))
        planned = _planned_jobs(run_snakemake(workdir, *CI, "-n"))
    finally:
        knn.write_text(source)
    downstream = {"property_predictions", "property_r2_table", "photoz_table", "plot_predicted_vs_true"}
    downstream.add("v2_headline_table")  # reads the R² table
    # the supervised baselines predict the k-NN's query half, which knn.py draws
    assert planned == downstream | {"image_backbone_knn", "supervised_baseline"}, planned
    assert "Nothing to be done" in run_snakemake(workdir, *CI, "-n").stdout


def test_every_rule_with_a_script_hashes_the_library_code_it_runs():
    """A rule added later gets the library trigger by one line: params code=library_code(<its script>)."""
    for smk in sorted((Path(__file__).parents[1] / "workflow/rules").glob("*.smk")):
        blocks = re.split(r"^\s*(?=(?:rule|checkpoint) \w+:)", smk.read_text(), flags=re.MULTILINE)
        for block in blocks:
            script = re.search(r'script:\s*"\.\./scripts/(\w+\.py)"', block)
            if script:
                name = block.split(":", 1)[0]
                assert f'code=library_code("{script[1]}")' in block, f"{smk.name}: {name} lacks the code param"


def test_a_deleted_target_selection_is_not_silently_ignored(workdir):
    """targets.parquet (the checkpoint's output) deleted and dataset.split changed: Snakemake would
    say "Nothing to be done" (it treats a deleted checkpoint output as a removed intermediate); the
    workflow refuses, saying why and how, and --forcerun of the checkpoint remakes it and the data."""
    targets = workdir / "resources/mock/targets.parquet"
    (workdir / "split.yaml").write_text("dataset: {split: {train: 0.5, val: 0.25, test: 0.25}}\n")
    split = (*CI, "split.yaml")  # layered on the ci preset: nothing else changes
    kept = targets.rename(targets.with_name("kept.parquet"))
    try:
        refused = run_snakemake(workdir, "-n", *split, check=False)
        forced = run_snakemake(workdir, "-n", *split, "--forcerun", "select_mock_targets")
    finally:
        kept.rename(targets)
    assert refused.returncode != 0 and "Nothing to be done" not in refused.stdout
    message = refused.stdout + refused.stderr
    assert "resources/mock/targets.parquet (the output of checkpoint select_mock_targets) is missing" in message
    assert "--forcerun select_mock_targets" in message
    assert {"select_mock_targets", "build_dataset"} <= _planned_jobs(forced)


def _executed_jobs(result) -> dict[str, int]:
    """Rule -> number of jobs a real run executed, from Snakemake's log."""
    counts: dict[str, int] = {}
    for name in re.findall(r"^\s*(?:local)?(?:rule|checkpoint) (\w+):", result.stderr + result.stdout, re.MULTILINE):
        counts[name] = counts.get(name, 0) + 1
    return counts


def test_changing_the_mock_seed_reruns_mock_and_dataset(workdir):
    extra = _extra_config(workdir, "seed", {"mock": {"seed": 8}})
    jobs = _executed_jobs(run_snakemake(workdir, "--configfile", extra))
    assert jobs.get("select_mock_targets") == 1
    assert jobs.get("mock_spectra") == 2 and jobs.get("mock_cutouts") == 2  # both shards
    assert jobs.get("build_dataset") == 1
    assert jobs.get("pretrain_spectra") == 1  # trained on the new data


def test_changing_a_training_value_reruns_training_not_data(workdir):
    extra = _extra_config(workdir, "lr", {"mock": {"seed": 8}, "pretrain_spectra": {"lr": 0.001}})
    jobs = _executed_jobs(run_snakemake(workdir, "--configfile", extra))
    assert jobs.get("pretrain_spectra") == 1
    assert not {"select_mock_targets", "mock_spectra", "mock_cutouts", "build_dataset"} & set(jobs)


def test_changing_a_report_value_reruns_no_data_rule(workdir):
    changes = {"mock": {"seed": 8}, "pretrain_spectra": {"lr": 0.001}, "report": {"gallery_size": 5}}
    jobs = _executed_jobs(run_snakemake(workdir, "--configfile", _extra_config(workdir, "gallery", changes)))
    assert jobs.get("plot_cutout_gallery") == 1
    expensive = {"select_mock_targets", "mock_spectra", "mock_cutouts", "build_dataset", "pretrain_spectra"}
    assert not (expensive | {"plot_example_spectra"}) & set(jobs)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"mock": {"seeed": 1}}, r"'seeed' was unexpected"),
        ({"mock": {"seed": "forty-two"}}, r"'forty-two' is not of type 'integer'[\s\S]*\['seed'\]"),
        ({"mock": {"artefact_fraction": 1.5}}, r"greater than the maximum[\s\S]*\['artefact_fraction'\]"),
        ({"colour": "red"}, r"'colour' was unexpected"),
        ({"dataset": {"split": {"train": 0.9, "val": 0.1, "test": 0.1}}}, r"config key 'dataset.split'"),
        ({"source": "sdss"}, r"'sdss' is not one of \['mock', 'desi-edr', 'astroclip-hdf5'\][\s\S]*\['source'\]"),
    ],
)
def test_bad_config_stops_with_a_message_naming_the_key(workdir, values, expected):
    extra = _extra_config(workdir, "bad", values)
    result = run_snakemake(workdir, "-n", "--configfile", extra, check=False)
    assert result.returncode != 0
    assert re.search(expected, result.stdout + result.stderr), result.stderr[-2000:]


def test_defaults_fill_keys_the_config_leaves_out(workdir):
    (workdir / "minimal.yaml").write_text("mock: {n_galaxies: 50}\n")
    result = run_snakemake(workdir, "-n", "--configfile", "minimal.yaml", "--print-compilation", check=False)
    assert result.returncode == 0, result.stderr[-2000:]


def test_slurm_profile_resolves(workdir):
    # The data now come from another seed (the rerun tests), so the plan rebuilds them.
    result = run_snakemake(workdir, *CI, "--profile", "slurm", "-n")
    assert "Using profile slurm" in result.stderr
    assert "select_mock_targets" in result.stdout and "build_dataset" in result.stdout


def test_the_published_model_plan_fetches_and_trains_nothing(tmp_path):
    workdir = copy_workflow(tmp_path / "astroclip")
    planned = _planned_jobs(
        run_snakemake(workdir, "-n", "--configfile", "configs/desi-edr.yaml", "--config", "model=published")
    )
    assert {"download_published", "record_published", "import_published_astroclip", "embed"} <= planned
    assert not {"pretrain_spectra", "pretrain_images", "pretrain_dino", "align", "import_image_encoder"} & planned


def test_report_front_page_names_the_published_weights():
    """The report's top page, rendered as Snakemake renders it (Jinja2 with the validated config)."""
    from types import SimpleNamespace

    import jinja2
    from snakemake.utils import validate

    repo = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((repo / "config.yaml").read_text())
    pin = {"revision": "ab" * 20, "sha256": "cd" * 32}
    config |= {
        "model": "published",
        "published": {name: dict(pin) for name in ("astroclip", "specformer", "astrodino")},
    }
    validate(config, str(repo / "workflow/schemas/config.schema.yaml"), set_default=True)
    page = jinja2.Template((repo / "workflow/report/workflow.rst").read_text())
    text = page.render(snakemake=SimpleNamespace(config=config))
    assert "published AstroCLIP v2 weights" in text
    for repository in ("polymathic-ai/astroclip", "polymathic-ai/specformer", "polymathic-ai/astrodino"):
        assert f"``{repository}`` / ``{repository.split('/')[1]}.ckpt``, revision ``{'ab' * 20}``" in text
    assert f"SHA-256 ``{'cd' * 32}``" in text and "spectrum transformer preset" not in text
    trained = page.render(snakemake=SimpleNamespace(config=config | {"model": "trained"}))
    assert "spectrum transformer preset" in trained and "published AstroCLIP" not in trained


def test_published_weights_are_evaluated_end_to_end(workdir, tmp_path, monkeypatch):
    """Synthetic files in the official layout, served by a loopback hub (HF_ENDPOINT), on the ci
    run's dataset: fetched, checked, converted, embedded and evaluated; nothing trains."""
    import hashlib

    import torch

    from .loopback import LoopbackServer
    from .published_checkpoints import VIT, astroclip_state, specformer_state, write_lightning_checkpoint
    from .test_astrodino import astrodino_checkpoint

    pubdir = copy_workflow(tmp_path / "astroclip")
    shutil.copytree(workdir / "resources", pubdir / "resources")
    shutil.copytree(workdir / "results/data", pubdir / "results/data")
    files = {"astroclip": tmp_path / "astroclip.ckpt", "specformer": tmp_path / "specformer.ckpt",
             "astrodino": tmp_path / "astrodino.ckpt"}  # fmt: skip
    write_lightning_checkpoint(files["astroclip"], astroclip_state())
    write_lightning_checkpoint(files["specformer"], specformer_state(12, 2, 120), {"num_heads": 2})
    torch.save(astrodino_checkpoint(VIT), files["astrodino"])
    revision = "c0ffee" * 6 + "c0ff"
    published = {"crop": 16, "specformer_heads": 2, "vit_heads": 2, "head_heads": 2}
    with LoopbackServer() as hub:
        for name, path in files.items():
            repo = f"polymathic-ai/{name}"
            hub.add_hub_file(repo, revision, path.name, path.read_bytes())
            sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
            published[name] = {"repo": repo, "file": path.name, "revision": revision, "sha256": sha256}
        extra = _extra_config(pubdir, "published", {"model": "published", "published": published})
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        # the embeddings and retrieval (published AstroCLIP), and the backbones of the before-alignment
        # rows (SpecFormer, AstroDINO); the property table after them costs 15 s more and adds no rule of this
        targets = ["results/embeddings/test.h5", "results/tables/retrieval.csv"]
        targets += ["results/models/spectrum_encoder.ckpt", "results/models/image_encoder.ckpt"]
        jobs = _executed_jobs(run_snakemake(pubdir, *targets, "--configfile", extra))
    assert jobs.get("download_published") == 3 and jobs.get("import_published_astroclip") == 1
    assert not {"pretrain_spectra", "pretrain_dino", "align", "build_dataset"} & set(jobs)
    assert (pubdir / "resources/published/astroclip/astroclip.ckpt").read_bytes() == files["astroclip"].read_bytes()
    record = yaml.safe_load((pubdir / "results/models/published/astroclip.json").read_text())
    assert record["revision"] == revision and record["source"] == "hub"
    model = torch.load(pubdir / "results/models/astroclip.ckpt", weights_only=True)
    assert (
        model["heads"] == model["spectrum_encoder"]["preprocessing"] == "official"
        and model["image_encoder"]["transpose"]
    )
    assert model["settings"]["published"] == record
    with h5py.File(pubdir / "results/embeddings/test.h5") as h5:
        assert h5["image_embedding"].shape[1] == h5["spectrum_embedding"].shape[1] == 16
    assert len(pd.read_csv(pubdir / "results/tables/retrieval.csv")) > 0
    assert torch.load(pubdir / "results/models/spectrum_encoder.ckpt", weights_only=True)["config"]["n_heads"] == 2
    image_encoder = torch.load(pubdir / "results/models/image_encoder.ckpt", weights_only=True)
    assert image_encoder["architecture"] == "vit" and image_encoder["crop"] == 16


def test_published_image_weights_replace_pretraining(workdir):
    # last in the file: the failed import below removes the encoder the earlier tests look at
    from .test_image_encoder import moco_checkpoint, published_state_dict

    torch = pytest.importorskip("torch")
    torch.save(moco_checkpoint(published_state_dict()), workdir / "moco.ckpt")
    model = {"preset": "paper", "width": None, "crop": 24, "weights": "moco.ckpt"}
    extra = _extra_config(workdir, "published", {"image_encoder": model})
    plan = run_snakemake(workdir, "--configfile", extra, "-n", "results/tables/image_backbone_knn.csv").stdout
    assert "import_image_encoder" in plan and "pretrain_images" not in plan

    broken = published_state_dict()
    del broken["layer1.0.conv2.weight"]
    torch.save(moco_checkpoint(broken), workdir / "broken.ckpt")
    extra = _extra_config(workdir, "broken", {"image_encoder": {**model, "weights": "broken.ckpt"}})
    result = run_snakemake(workdir, "results/models/image_encoder.ckpt", "--configfile", extra, check=False)
    assert result.returncode != 0
    log = (workdir / "results/logs/import_image_encoder.log").read_text()
    assert "missing keys (1): ['layer1.0.conv2.weight']" in log


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTEFACTS = Path(__file__).resolve().parents[1] / "test-artefacts"


def _chromium(*args: str, cwd: Path) -> str:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000", *args]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=180, check=True).stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs Debian's chromium)")
def test_report_renders_in_chromium_with_every_image(workdir, tmp_path):
    report = workdir / "results/report.html"
    # The report is a single-page app: the DOM after JavaScript ran holds the rendered menu and the
    # top page, which the raw file only has as data.
    dom = _chromium("--dump-dom", report.as_uri(), cwd=tmp_path)
    app = dom[dom.index('<div id="app">') :]
    assert app.startswith('<div id="app"><div'), "the report's app did not render"
    assert "AstroCLIP, reproduced as a workflow" in app and "mock" in app

    # Every embedded PNG, decoded by the browser itself in a page that counts the images it could draw.
    images = re.findall(r'"(data:image/png;[^"]+)"', report.read_text())
    assert len(images) >= 19  # every figure rule of the mock-survey workflow
    page = tmp_path / "images.html"
    tags = "".join(f'<img src="{src}">' for src in images)
    page.write_text(
        f"<html><body>{tags}<script>"
        "function count() { const all = [...document.images];"
        " if (all.some(i => !i.complete)) { setTimeout(count, 100); return; }"
        " const ok = all.filter(i => i.naturalWidth > 0).length;"
        " document.body.setAttribute('data-decoded', ok + '/' + all.length); }"
        " setTimeout(count, 100);"
        "</script></body></html>"
    )
    decoded = re.search(r'data-decoded="(\d+)/(\d+)"', _chromium("--dump-dom", page.as_uri(), cwd=tmp_path))
    assert decoded and decoded.group(1) == decoded.group(2) == str(len(images)), decoded

    ARTEFACTS.mkdir(exist_ok=True)
    screenshot = ARTEFACTS / "report.png"
    _chromium(f"--screenshot={screenshot}", "--window-size=1400,1000", report.as_uri(), cwd=tmp_path)
    assert screenshot.stat().st_size > 20_000  # a drawn page, not a blank one


CHROMEDRIVER = shutil.which("chromedriver")
# Where galaxy i of the explorer's map is on the screen, from the map's own scales.
_POINT_ON_SCREEN = """
const doc = Bokeh.documents[0], view = Bokeh.index.get_one(doc.get_model_by_name("umap"));
const data = doc.get_model_by_name("galaxies").data, i = arguments[0];
const box = view.canvas_view.el.getBoundingClientRect();
return [box.left + view.frame.x_scale.compute(data.x[i]), box.top + view.frame.y_scale.compute(data.y[i])];
"""
_NEIGHBOUR_PANEL = """
return [...document.querySelectorAll("#galaxy section.pair")].map(
  (s) => [s.dataset.pair, [...s.querySelectorAll("li.neighbour")].map((li) => li.dataset.targetid)]);
"""
_MAP_FRAME = """
const view = Bokeh.index.get_one(Bokeh.documents[0].get_model_by_name("umap"));
const box = view.canvas_view.el.getBoundingClientRect(), frame = view.frame.bbox;
return [box.left + frame.left, box.top + frame.top, frame.width, frame.height];
"""
_GALLERY = """
const members = [...document.querySelectorAll("#gallery a.member")].map((a) => Number(a.dataset.index));
const selected = Bokeh.documents[0].get_model_by_name("galaxies").selected.indices;
return members.length ? [selected, members] : null;
"""
# Bokeh draws its widgets inside shadow roots: find the TARGETID box by its placeholder.
_TARGETID_INPUT = """
function find(root) {
  for (const el of root.querySelectorAll("*")) {
    if (el.tagName === "INPUT" && (el.placeholder || "").startsWith("type a TARGETID")) return el;
    if (el.shadowRoot) { const found = find(el.shadowRoot); if (found) return found; }
  }
  return null;
}
return find(document);
"""


@pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="chromium and chromedriver are not installed (make test installs Debian's chromium and chromium-driver)",
)
def test_explorer_lists_the_exact_neighbours_in_chromium(workdir):
    """The page as a user drives it: load, click a galaxy, type a TARGETID; neighbours equal numpy's."""
    import numpy as np
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from astroclip_pipeline.evaluate.search import PAIRS
    from astroclip_pipeline.evaluate.structure import load_heldout

    page = workdir / "results/explorer.html"
    assert 1e6 < page.stat().st_size < 20e6
    # Chromium shows no data: URL over 2 MB in the report's viewer: the caption links the file beside it
    assert re.search(r'href=\\?"explorer.html\\?"', (workdir / "results/report.html").read_text())
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,1000"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(page.as_uri())
        ready = "return Bokeh.documents.length > 0 && !!window.AstroExplorer"
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(ready))
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(_TARGETID_INPUT) is not None)
        page_ids = driver.execute_script('return Bokeh.documents[0].get_model_by_name("galaxies").data.TARGETID')

        # numpy's answer, from the embedding files, for the galaxies on the page
        heldout = load_heldout([workdir / f"results/embeddings/{s}.h5" for s in ("val", "test")], ["val", "test"])
        rows = [int(np.flatnonzero(heldout["TARGETID"] == int(t))[0]) for t in page_ids]
        k = driver.execute_script('return JSON.parse(document.getElementById("explorer-data").textContent).top_k')
        assert k == 8  # the schema's default, which neither config.yaml nor ci.yaml changes

        def assert_exact_neighbours(panel: dict, i: int) -> None:
            """The page's neighbours of galaxy i are numpy's top k in float64, as the page computes
            them, in order. Where two candidates' similarities agree to 1e-12 the page's sum and
            numpy's (another summation order) may rank them either way, so the check is then on the
            similarities at each rank."""
            assert set(panel) == set(PAIRS)
            position = {t: j for j, t in enumerate(page_ids)}
            for pair, (query, candidates) in PAIRS.items():
                similarity = heldout[candidates][rows].astype(np.float64) @ heldout[query][rows][i].astype(np.float64)
                if query == candidates:
                    similarity[i] = -np.inf  # a galaxy is not its own neighbour
                order = np.argsort(-similarity, kind="stable")[: k + 1]
                listed = [position[t] for t in panel[pair]]
                assert len(set(listed)) == len(listed) == k, pair
                np.testing.assert_allclose(similarity[listed], similarity[order[:k]], rtol=0, atol=1e-12, err_msg=pair)
                if np.all(np.diff(similarity[order]) < -1e-12):  # no near-ties: the same galaxies, same order
                    assert listed == list(order[:k]), pair

        # a real click on galaxy 11 of the map
        x, y = driver.execute_script(_POINT_ON_SCREEN, 11)
        click = ActionBuilder(driver)
        click.pointer_action.move_to_location(round(x), round(y))
        click.pointer_action.click()
        click.perform()
        WebDriverWait(driver, 10).until(lambda d: d.execute_script(_NEIGHBOUR_PANEL))
        opened_id = 'return document.querySelector("#galaxy .galaxy").dataset.targetid'
        assert driver.execute_script(opened_id) == page_ids[11]
        assert_exact_neighbours(dict(driver.execute_script(_NEIGHBOUR_PANEL)), 11)

        # a TARGETID typed into the box
        box = driver.execute_script(_TARGETID_INPUT)
        box.click()
        box.send_keys(page_ids[30], Keys.ENTER)
        WebDriverWait(driver, 10).until(lambda d: d.execute_script(opened_id) == page_ids[30])
        assert_exact_neighbours(dict(driver.execute_script(_NEIGHBOUR_PANEL)), 30)
        # a lasso drawn over the left half of the map: the gallery shows exactly the selected galaxies
        left, top, width, height = driver.execute_script(_MAP_FRAME)
        lasso = ActionBuilder(driver)
        corners = [(0.02, 0.02), (0.5, 0.02), (0.5, 0.98), (0.02, 0.98), (0.02, 0.03)]
        lasso.pointer_action.move_to_location(round(left + 0.02 * width), round(top + 0.02 * height)).pointer_down()
        for fx, fy in corners[1:]:
            lasso.pointer_action.move_to_location(round(left + fx * width), round(top + fy * height))
        lasso.pointer_action.pointer_up()
        lasso.perform()
        WebDriverWait(driver, 10).until(lambda d: d.execute_script(_GALLERY))
        selected, members = driver.execute_script(_GALLERY)
        assert len(selected) > 0 and sorted(members) == sorted(selected)
        ARTEFACTS.mkdir(exist_ok=True)
        driver.save_screenshot(str(ARTEFACTS / "explorer.png"))
        errors = [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]
        assert errors == []
    finally:
        driver.quit()


@pytest.mark.parametrize("preset", ["mock-60k", "v2"])
def test_the_mock_survey_presets_validate_and_plan(tmp_path, preset):
    """The presets layered on the default that no other test runs: the schema accepts them and
    Snakemake plans the whole run (the target selection, a checkpoint, comes first)."""
    workdir = copy_workflow(tmp_path / "astroclip")
    plan = run_snakemake(workdir, "-n", "--configfile", f"configs/{preset}.yaml").stdout
    for rule in ("select_mock_targets", "pretrain_spectra", "align", "property_predictions"):
        assert re.search(rf"^{rule}\s+1$", plan, re.MULTILINE), plan[-3000:]


def test_a_moco_head_narrower_than_the_embedding_stops_before_any_job(tmp_path):
    """A ResNet's image embedding is its MoCo head's output: a 1024-d alignment of a 128-d head (as
    configs/v2.yaml's comparison backbone had) must stop at planning, not after the pretraining."""
    workdir = copy_workflow(tmp_path / "astroclip")
    overlay = workdir / "wide.yaml"
    overlay.write_text("align:\n  embed_dim: 1024\nevaluation:\n  compare_image_encoders: true\n")
    failed = run_snakemake(workdir, "-n", *CI, "--configfile", overlay.name, check=False)
    assert failed.returncode != 0
    message = failed.stdout + failed.stderr
    assert "pretrain_images.projection_dim" in message and "align.embed_dim" in message, message[-3000:]
