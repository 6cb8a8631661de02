"""AstroCLIP alignment: the loss against hand values and its distributed form, the feature caches,
a run that resumes, the embedding files and the retrieval metrics."""

import math
import socket

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

from astroclip_pipeline.data.augmentations import N_ORIENTATIONS, dihedral, random_dihedral
from astroclip_pipeline.evaluate.embeddings import embed_split, read_embeddings
from astroclip_pipeline.evaluate.retrieval import partner_ranks, retrieval_table
from astroclip_pipeline.models.astroclip import AstroCLIP, load_astroclip
from astroclip_pipeline.models.image_encoder import ImageEncoder, ViTImageEncoder, save_image_encoder
from astroclip_pipeline.models.resnet import ResNetConfig
from astroclip_pipeline.models.specformer import SpecFormer, SpecFormerConfig, save_encoder
from astroclip_pipeline.models.vit import ViTConfig
from astroclip_pipeline.train.alignment import (
    AlignmentData,
    AlignmentModule,
    AlignSettings,
    align,
    frozen_feature_caches,
)
from astroclip_pipeline.train.contrastive import clip_loss, distributed_clip_loss
from astroclip_pipeline.train.loop import last_checkpoint

from .training import CountSteps, PreemptAt, Preempted, assert_same_weights


def test_clip_loss_2x2_by_hand():
    pairs = torch.eye(2)
    # each row's own logit is s, the other 0: -log(e^s / (e^s + 1)) = log(1 + e^-s), both directions
    assert clip_loss(pairs, pairs, 1.0).item() == pytest.approx(math.log(1 + math.exp(-1)))
    assert clip_loss(pairs, pairs, 15.5).item() == pytest.approx(math.log(1 + math.exp(-15.5)), abs=1e-6)
    # swapped partners: the own logit is 0 and the other s
    assert clip_loss(pairs, pairs.flip(0), 1.0).item() == pytest.approx(math.log(1 + math.exp(1)))


def test_clip_loss_3x3_by_hand():
    image = torch.eye(3)
    spectrum = torch.tensor([[1.0, 0, 0], [1.0, 1.0, 0], [0, 0, 1.0]])  # the second is normalised inside
    c = 1 / math.sqrt(2)  # cosines: row i of image against spectra j = [[1, c, 0], [0, c, 0], [0, 0, 1]]
    e = math.exp
    image_to_spectrum = [
        -math.log(e(1) / (e(1) + e(c) + 1)),
        -math.log(e(c) / (1 + e(c) + 1)),
        -math.log(e(1) / (1 + 1 + e(1))),
    ]
    spectrum_to_image = [
        -math.log(e(1) / (e(1) + 1 + 1)),
        -math.log(e(c) / (e(c) + e(c) + 1)),
        -math.log(e(1) / (1 + 1 + e(1))),
    ]
    expected = 0.5 * (sum(image_to_spectrum) / 3 + sum(spectrum_to_image) / 3)
    assert clip_loss(image, spectrum, 1.0).item() == pytest.approx(expected, rel=1e-6)


def numpy_clip_loss(x: np.ndarray, y: np.ndarray, scale: float) -> float:
    """The definition, written out in log-sum-exp form."""
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    y = y / np.linalg.norm(y, axis=1, keepdims=True)
    logits = scale * x @ y.T

    def cross_entropy(z):
        top = z.max(axis=1, keepdims=True)
        logsumexp = top[:, 0] + np.log(np.exp(z - top).sum(axis=1))
        return np.mean(logsumexp - np.diag(z))

    return 0.5 * (cross_entropy(logits) + cross_entropy(logits.T))


def test_clip_loss_matches_the_definition_on_random_features():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 16)), rng.normal(size=(64, 16))
    for scale in (1.0, 15.5, 100.0):
        torch_loss = clip_loss(torch.from_numpy(x), torch.from_numpy(y), scale).item()
        assert torch_loss == pytest.approx(numpy_clip_loss(x, y, scale), rel=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_loss(rank: int, world_size: int, port: int, image, spectrum, results) -> None:
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    n = len(image) // world_size
    local_image = image[rank * n : (rank + 1) * n].clone().requires_grad_(True)
    local_spectrum = spectrum[rank * n : (rank + 1) * n].clone().requires_grad_(True)
    to_backpropagate, reported = distributed_clip_loss(local_image, local_spectrum, 15.5)
    to_backpropagate.backward()
    results[rank] = (reported.item(), local_image.grad.clone(), local_spectrum.grad.clone())
    torch.distributed.destroy_process_group()


def test_distributed_loss_equals_the_single_process_loss_on_the_global_batch():
    torch.manual_seed(0)
    image, spectrum = torch.randn(8, 16), torch.randn(8, 16)
    results = mp.Manager().dict()
    mp.spawn(_rank_loss, args=(2, _free_port(), image, spectrum, results), nprocs=2, join=True)

    full_image, full_spectrum = image.clone().requires_grad_(True), spectrum.clone().requires_grad_(True)
    loss = clip_loss(full_image, full_spectrum, 15.5)
    loss.backward()
    for rank in (0, 1):
        reported, image_grad, spectrum_grad = results[rank]
        assert reported == pytest.approx(loss.item(), rel=1e-6)
        # DDP averages the ranks' parameter gradients; with the world-size factor, the average of
        # what flows from each rank's own slice is the single-process gradient
        rows = slice(4 * rank, 4 * rank + 4)
        assert torch.allclose(image_grad / 2, full_image.grad[rows], atol=1e-6)
        assert torch.allclose(spectrum_grad / 2, full_spectrum.grad[rows], atol=1e-6)


@pytest.fixture(scope="module")
def encoders(tmp_path_factory, tiny_dataset):
    """Small random backbones saved as the pretraining rules save them."""
    out = tmp_path_factory.mktemp("encoders")
    torch.manual_seed(0)
    spectrum_encoder = SpecFormer(SpecFormerConfig(embed_dim=16, n_layers=1, n_heads=2))
    save_encoder(spectrum_encoder, out / "spectrum.ckpt")
    image_encoder = ImageEncoder(ResNetConfig("basic", (1, 1, 1, 1), 4), crop=24, head=(32, 16))
    save_image_encoder(image_encoder, out / "image.ckpt", source="test")
    return {"spectrum": out / "spectrum.ckpt", "image": out / "image.ckpt"}


SETTINGS = {"epochs": 3, "batch_size": 16, "embed_dim": 16, "n_heads": 2, "lr": 1e-3}


def test_cached_features_give_the_same_embeddings_as_the_backbones(encoders, tiny_dataset):
    from astroclip_pipeline.train.alignment import build_model

    s = AlignSettings.from_config(SETTINGS)
    model = build_model(encoders["spectrum"], encoders["image"], s)
    (cache,) = frozen_feature_caches(model, [tiny_dataset["val"]], s)
    with h5py.File(tiny_dataset["val"]) as h5:
        images = torch.from_numpy(h5["image"][:5])
        n_rows = len(h5["TARGETID"])
    assert cache["image_features"].shape == (n_rows, 8, 32)
    with torch.no_grad():
        for orientation in (0, 3, 6):
            direct = model.image_encoder(dihedral(images, orientation))
            assert torch.allclose(cache["image_features"][:5, orientation], direct, atol=1e-5)

    module = AlignmentModule(model, {**SETTINGS})
    cached_batch = next(iter(torch.utils.data.DataLoader(AlignmentData(tiny_dataset["val"], cache), batch_size=8)))
    raw_batch = next(iter(torch.utils.data.DataLoader(AlignmentData(tiny_dataset["val"], {}), batch_size=8)))
    assert set(cached_batch) >= {"image_features", "hidden"} and "image" not in cached_batch
    assert set(raw_batch) >= {"image", "spectrum", "ivar"}
    with torch.no_grad():
        cached_loss = module._loss(cached_batch, training=False)[1]
        raw_loss = module._loss(raw_batch, training=False)[1]
    assert cached_loss.item() == pytest.approx(raw_loss.item(), rel=1e-5)


def test_memory_budget_turns_the_caches_off(encoders, tiny_dataset):
    from astroclip_pipeline.train.alignment import build_model

    s = AlignSettings.from_config({**SETTINGS, "cache_memory_gib": 1e-6})
    (cache,) = frozen_feature_caches(build_model(encoders["spectrum"], encoders["image"], s), [tiny_dataset["val"]], s)
    assert cache == {}
    s = AlignSettings.from_config({**SETTINGS, "noise": True})
    assert not s.image_features_cacheable and s.spectrum_features_cacheable


def _align(tiny_dataset, encoders, run_dir, callbacks=(), settings=SETTINGS):
    align(
        tiny_dataset["train"], tiny_dataset["val"], encoders["spectrum"], encoders["image"], run_dir,
        run_dir.parent / "astroclip.ckpt", run_dir.parent / "metrics.csv", settings, callbacks=callbacks,
    )  # fmt: skip


def test_the_same_seed_trains_the_same_heads(tiny_dataset, encoders, tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        _align(tiny_dataset, encoders, tmp_path / name / "run", settings={**SETTINGS, "epochs": 1})
    assert_same_weights(tmp_path / "a" / "astroclip.ckpt", tmp_path / "b" / "astroclip.ckpt")


def test_embedding_with_a_gpu_asked_for_and_none_visible_stops(tiny_dataset, encoders, tmp_path, monkeypatch):
    _align(tiny_dataset, encoders, tmp_path / "run", settings={**SETTINGS, "epochs": 1})
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    named = r"rule embed: config key 'align.gpus' asks for 1 GPU\(s\).*allow_cpu_fallback"
    with pytest.raises(RuntimeError, match=named):
        embed_split(tmp_path / "astroclip.ckpt", tiny_dataset["test"], tmp_path / "test.h5", gpus=1)
    assert not (tmp_path / "test.h5").exists()
    embed_split(tmp_path / "astroclip.ckpt", tiny_dataset["test"], tmp_path / "test.h5", gpus=1, cpu_fallback=True)
    assert read_embeddings(tmp_path / "test.h5")["image_embedding"].shape[1] == SETTINGS["embed_dim"]


def test_alignment_resumes_and_its_embeddings_are_normalised(tiny_dataset, encoders, tmp_path):
    run_dir = tmp_path / "run"
    # preempted in the middle of the second epoch, so that the first one's validation has run
    with h5py.File(tiny_dataset["train"]) as h5:
        steps_per_epoch = len(h5["TARGETID"]) // SETTINGS["batch_size"]  # the training loader drops a ragged batch
    preempt_at = steps_per_epoch + steps_per_epoch // 2
    with pytest.raises(Preempted):
        _align(tiny_dataset, encoders, run_dir, callbacks=[PreemptAt(preempt_at)])
    assert torch.load(last_checkpoint(run_dir), weights_only=False)["global_step"] == preempt_at
    counter = CountSteps()
    _align(tiny_dataset, encoders, run_dir, callbacks=[counter])
    final = torch.load(last_checkpoint(run_dir), weights_only=False)["global_step"]
    assert counter.steps == final - preempt_at > 0
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics.val_loss.notna().sum() == SETTINGS["epochs"]  # one validation per epoch, across the attempts

    model = load_astroclip(tmp_path / "astroclip.ckpt")
    assert isinstance(model, AstroCLIP)
    # the frozen backbones came through training unchanged
    spectrum_before = torch.load(encoders["spectrum"], weights_only=True)["state_dict"]
    for name, value in model.spectrum_encoder.state_dict().items():
        assert torch.equal(value, spectrum_before[name]), name

    embed_split(tmp_path / "astroclip.ckpt", tiny_dataset["test"], tmp_path / "test.h5", batch_size=7)
    embeddings = read_embeddings(tmp_path / "test.h5")
    with h5py.File(tiny_dataset["test"]) as h5:
        assert np.array_equal(embeddings["TARGETID"], h5["TARGETID"][()])
        n = len(h5["TARGETID"])
    for key in ("image_embedding", "spectrum_embedding"):
        assert embeddings[key].shape == (n, 16) and embeddings[key].dtype == np.float32
        assert np.allclose(np.linalg.norm(embeddings[key], axis=1), 1.0, atol=1e-5)
    for column in ("Z_HP", "LOGMSTAR", "MAG_G", "TRUTH_ARTEFACT"):
        assert embeddings[column].shape == (n,), column
    assert "image" not in embeddings and "wavelength" not in embeddings


@pytest.mark.parametrize("image_tokens", ["all", "patches"])
def test_alignment_with_a_vit_trains_its_cross_attention_head(tiny_dataset, encoders, tmp_path, image_tokens):
    torch.manual_seed(1)
    vit = ViTImageEncoder(ViTConfig(image_size=24, patch_size=8, embed_dim=16, depth=2, n_heads=2), crop=24)
    save_image_encoder(vit, tmp_path / "vit.ckpt", source="test")
    vit_encoders = {**encoders, "image": tmp_path / "vit.ckpt"}
    settings = {**SETTINGS, "epochs": 2, "embed_dim": 24, "image_tokens": image_tokens}
    from astroclip_pipeline.train.alignment import build_model

    s = AlignSettings.from_config(settings)
    model = build_model(encoders["spectrum"], tmp_path / "vit.ckpt", s)
    (cache,) = frozen_feature_caches(model, [tiny_dataset["val"]], s)
    n_tokens = 9 + (image_tokens == "all")  # 3 x 3 patches of 8 pixels, and the CLS token
    assert cache["image_features"].shape[1:] == (8, n_tokens, 16)
    with h5py.File(tiny_dataset["val"]) as h5:
        images = torch.from_numpy(h5["image"][:4])
    with torch.no_grad():
        direct = model.image_head_input(dihedral(images, 5))
    torch.testing.assert_close(cache["image_features"][:4, 5], direct, atol=1e-5, rtol=1e-5)

    _align(tiny_dataset, vit_encoders, tmp_path / "run", settings=settings)
    trained = load_astroclip(tmp_path / "astroclip.ckpt")
    assert trained.image_tokens == image_tokens
    assert not torch.equal(trained.image_head.query, model.image_head.query)  # the head trained
    for name, value in trained.image_encoder.backbone.state_dict().items():  # the ViT did not
        assert torch.equal(value, vit.backbone.state_dict()[name]), name
    embed_split(tmp_path / "astroclip.ckpt", tiny_dataset["test"], tmp_path / "test.h5", batch_size=7)
    embeddings = read_embeddings(tmp_path / "test.h5")
    assert embeddings["image_embedding"].shape[1] == embeddings["spectrum_embedding"].shape[1] == 24
    assert np.allclose(np.linalg.norm(embeddings["image_embedding"], axis=1), 1.0, atol=1e-5)


def test_retrieval_ranks_and_recall_by_hand():
    # three galaxies in 2-d: spectra match their images except that galaxy 2's spectrum is closest to image 0
    image = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    spectrum = np.array([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]])
    assert partner_ranks(spectrum, image).tolist() == [1, 1, 3]
    table = retrieval_table(image, spectrum, ks=(1, 2)).set_index("direction")
    assert table.loc["spectrum -> image", "recall@1"] == pytest.approx(2 / 3)
    assert table.loc["spectrum -> image", "recall@2"] == pytest.approx(2 / 3)
    assert table.loc["spectrum -> image", "chance@1"] == pytest.approx(1 / 3)
    assert table.loc["spectrum -> image", "median_rank"] == 1
    assert table.loc["spectrum -> image", "chance_median_rank"] == 2
    # image 2 (-1, 0): similarities to spectra -1, 0, -0.8 -> its own spectrum ranks 2nd
    assert partner_ranks(image, spectrum).tolist() == [1, 1, 2]


def test_random_dihedral_turns_each_image_by_its_own_draw():
    images = torch.rand(16, 3, 5, 5)
    turned = random_dihedral(images, torch.Generator().manual_seed(4))
    choice = torch.randint(N_ORIENTATIONS, (16,), generator=torch.Generator().manual_seed(4))
    assert len(set(choice.tolist())) > 4  # the draw uses several of the eight
    for image, out, orientation in zip(images, turned, choice.tolist(), strict=True):
        torch.testing.assert_close(out, dihedral(image[None], orientation)[0], rtol=0, atol=0)
