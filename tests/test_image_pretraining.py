"""Stein et al.'s augmentations, the MoCo v2 pieces, and a pretraining run that resumes."""

import math

import pandas as pd
import pytest
import torch

from astroclip_pipeline.data.augmentations import (
    EXTINCTION_R,
    AugmentationSpec,
    augment,
    center_crop,
    gaussian_blur,
    random_affine_crop,
    random_band_jitter,
    random_blur,
    random_noise,
    random_reddening,
)
from astroclip_pipeline.models.image_encoder import load_image_encoder
from astroclip_pipeline.train.image_pretraining import (
    ImagePretrainSettings,
    MoCoPretraining,
    info_nce_logits,
    pretrain_images,
)
from astroclip_pipeline.train.loop import last_checkpoint

from .training import CountSteps, PreemptAt, Preempted, assert_same_weights


def gaussian_galaxies(batch: int = 4, size: int = 64, sigma: float = 3.0) -> torch.Tensor:
    """Round Gaussian sources at the centre, brighter in z than in g, in nanomaggies."""
    y, x = torch.meshgrid(torch.arange(size) - (size - 1) / 2, torch.arange(size) - (size - 1) / 2, indexing="ij")
    profile = torch.exp(-(x**2 + y**2) / (2 * sigma**2))
    profile = profile / profile.sum()
    band_flux = torch.tensor([1.0, 2.0, 3.0])
    return (band_flux[:, None, None] * profile).expand(batch, 3, size, size).clone()


SPEC = AugmentationSpec(crop=32, max_shift=2.0)


def test_every_augmentation_keeps_shape_and_dtype():
    images = gaussian_galaxies()
    g = torch.Generator().manual_seed(0)
    for transform, shape in [
        (random_reddening, images.shape),
        (random_band_jitter, images.shape),
        (random_blur, images.shape),
        (random_noise, images.shape),
        (random_affine_crop, (4, 3, 32, 32)),
        (augment, (4, 3, 32, 32)),
    ]:
        out = transform(images, SPEC, g)
        assert out.shape == shape and out.dtype == torch.float32, transform.__name__
        assert torch.isfinite(out).all()


def test_rotation_flip_and_shift_keep_the_flux_of_a_source_inside_the_crop():
    images = gaussian_galaxies()
    spec = AugmentationSpec(crop=32, scale=(1.0, 1.0), max_shift=3.0)
    out = random_affine_crop(images, spec, torch.Generator().manual_seed(1))
    # Bilinear resampling of a well-sampled source conserves its flux; the crop holds all of it.
    assert torch.allclose(out.sum(dim=(2, 3)), images.sum(dim=(2, 3)), rtol=0.01)


def test_size_jitter_scales_flux_as_the_area():
    images = gaussian_galaxies(batch=1)
    spec = AugmentationSpec(crop=32, scale=(1.1, 1.1), max_shift=0.0)
    out = random_affine_crop(images, spec, torch.Generator().manual_seed(2))
    # Enlarging by 1.1 keeps the surface brightness, so the summed flux grows by 1.1².
    assert torch.allclose(out.sum(dim=(2, 3)), 1.21 * images.sum(dim=(2, 3)), rtol=0.01)


def test_blur_keeps_flux_and_widens_the_source():
    images = gaussian_galaxies(batch=2, size=63, sigma=3.0)  # odd size: the peak falls on a pixel
    blurred = gaussian_blur(images, torch.tensor([[0.0, 0.0, 0.0], [3.0, 3.0, 3.0]]))
    assert torch.allclose(blurred[0], images[0], atol=1e-6)  # σ = 0 is the identity
    assert torch.allclose(blurred.sum(dim=(2, 3)), images.sum(dim=(2, 3)), rtol=1e-3)
    # Gaussians add in quadrature: the peak of a 3-px source blurred by 3 px falls by a factor 2
    assert blurred[1, 0].max() == pytest.approx(images[1, 0].max().item() / 2, rel=0.02)


def test_reddening_dims_blue_bands_most_and_noise_has_the_drawn_level():
    images = gaussian_galaxies(batch=256)
    reddened = random_reddening(images, AugmentationSpec(max_ebv=0.5), torch.Generator().manual_seed(3))
    ratio = reddened.sum(dim=(2, 3)) / images.sum(dim=(2, 3))
    assert (ratio <= 1).all() and (ratio[:, 0] < ratio[:, 1]).all() and (ratio[:, 1] < ratio[:, 2]).all()
    # every image is dimmed as one E(B-V): log ratios are in proportion to R
    log_ratio = -2.5 * torch.log10(ratio)
    assert torch.allclose(log_ratio[:, 0] / EXTINCTION_R[0], log_ratio[:, 2] / EXTINCTION_R[2], atol=1e-5)

    flat = torch.zeros(64, 3, 64, 64)
    noisy = random_noise(flat, AugmentationSpec(noise_sigma=((0.01, 0.01), (0.02, 0.02), (0.05, 0.05))))
    assert noisy.std(dim=(0, 2, 3)).tolist() == pytest.approx([0.01, 0.02, 0.05], rel=0.02)
    assert abs(noisy.mean().item()) < 1e-3


def test_band_jitter_scales_each_band_by_its_own_uniform_magnitude_offset():
    images = gaussian_galaxies(batch=4000, size=16)
    spec = AugmentationSpec(max_band_jitter=0.3)
    jittered = random_band_jitter(images, spec, torch.Generator().manual_seed(4))
    # each band is the same picture times one factor: the shape of the galaxy is untouched
    ratio = jittered / images
    assert torch.allclose(ratio, ratio[..., :1, :1].expand_as(ratio), rtol=1e-5)
    delta_mag = -2.5 * torch.log10(ratio[:, :, 0, 0]).double()
    assert delta_mag.abs().max() <= 0.3 + 1e-5
    # uniform in ±0.3 mag: mean 0, standard deviation 0.3 / sqrt(3), every band drawn on its own
    assert delta_mag.mean(dim=0).abs().max() < 0.01
    assert delta_mag.std(dim=0).tolist() == pytest.approx([0.3 / math.sqrt(3)] * 3, rel=0.04)
    correlation = torch.corrcoef(delta_mag.T)
    assert (correlation - torch.eye(3, dtype=correlation.dtype)).abs().max() < 0.06
    # so colours change: g - r of one galaxy now spreads by sqrt(2) times a band's offset
    colour_change = delta_mag[:, 0] - delta_mag[:, 1]
    assert colour_change.std().item() == pytest.approx(math.sqrt(2) * 0.3 / math.sqrt(3), rel=0.05)


def test_band_jitter_is_seeded_and_off_by_default():
    images = gaussian_galaxies(batch=8)
    spec = AugmentationSpec(crop=32, max_shift=2.0, max_band_jitter=0.2)
    first, again = (augment(images, spec, torch.Generator().manual_seed(5)) for _ in range(2))
    assert torch.equal(first, again)
    assert not torch.equal(first, augment(images, spec, torch.Generator().manual_seed(6)))
    # jitter 0 (Stein et al., the default) draws nothing: the chain and its random stream are as before
    g = torch.Generator().manual_seed(7)
    stein = random_noise(random_affine_crop(random_blur(random_reddening(images, SPEC, g), SPEC, g), SPEC, g), SPEC, g)
    assert torch.equal(augment(images, SPEC, torch.Generator().manual_seed(7)), stein)
    # the config key reaches the views of MoCo
    settings = ImagePretrainSettings.from_config({"band_jitter_mag": 0.25})
    assert settings.augmentations(48).max_band_jitter == 0.25
    assert ImagePretrainSettings().augmentations(48).max_band_jitter == 0.0


def test_center_crop():
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).reshape(2, 3, 6, 6)
    assert torch.equal(center_crop(images, 2), images[..., 2:4, 2:4])


def test_info_nce_logits_by_hand():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[math.sqrt(0.5), math.sqrt(0.5)]])
    queue = torch.tensor([[0.0, -1.0], [1.0, 0.0]])  # columns are negatives (0, 1) and (-1, 0)
    logits = info_nce_logits(q, k, queue, temperature=0.5)
    assert logits[0].tolist() == pytest.approx([2 * math.sqrt(0.5), 0.0, -2.0])


def test_queue_wraps_around_and_key_encoder_follows_by_momentum():
    model = {"block": "basic", "layers": [1, 1, 1, 1], "width": 4, "in_channels": 3}
    module = MoCoPretraining(model, crop=16, settings={"queue_size": 10, "projection_dim": 4, "encoder_momentum": 0.9})
    keys = [torch.full((4, 4), float(i)) for i in range(1, 4)]
    for batch in keys:
        module._enqueue(batch)
    assert module.queue_ptr.item() == 2  # 12 keys through a queue of 10
    assert module.queue[0].tolist() == [3, 3, 1, 1, 2, 2, 2, 2, 3, 3]

    before_k = [p.clone() for p in module.encoder_k.parameters()]
    with torch.no_grad():
        for p in module.encoder_q.parameters():
            p.add_(1.0)
    module._update_key_encoder()
    for k, k0, q in zip(module.encoder_k.parameters(), before_k, module.encoder_q.parameters(), strict=True):
        assert torch.allclose(k, 0.9 * k0 + 0.1 * q)


MODEL = {"preset": "laptop", "width": 4, "crop": 24}
SETTINGS = {"epochs": 3, "batch_size": 8, "queue_size": 32, "lr": 0.03, "max_shift": 2.0}


def _run(tiny_dataset, run_dir, callbacks=(), settings=SETTINGS):
    pretrain_images(
        tiny_dataset["train"], tiny_dataset["val"], run_dir, run_dir.parent / "encoder.ckpt",
        run_dir.parent / "metrics.csv", MODEL, settings, callbacks=callbacks,
    )  # fmt: skip


def test_interrupted_image_pretraining_resumes_and_writes_a_loadable_encoder(tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(Preempted):
        _run(tiny_dataset, run_dir, callbacks=[PreemptAt(5)])
    saved = torch.load(last_checkpoint(run_dir), weights_only=False)
    assert saved["global_step"] == 5 and "queue" in saved["state_dict"]
    assert not (tmp_path / "encoder.ckpt").exists()

    counter = CountSteps()
    _run(tiny_dataset, run_dir, callbacks=[counter])
    final = torch.load(last_checkpoint(run_dir), weights_only=False)
    assert counter.steps == final["global_step"] - 5 > 0
    encoder = load_image_encoder(tmp_path / "encoder.ckpt")
    assert encoder.crop == 24 and encoder.feature_dim == 32
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics.val_loss.notna().sum() >= 3  # epochs of both attempts
    # every step logged once, except perhaps the one in flight when the run was interrupted
    assert final["global_step"] - 1 <= metrics.train_loss_step.notna().sum() <= final["global_step"]


def test_the_same_seed_trains_the_same_image_encoder(tiny_dataset, tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        _run(tiny_dataset, tmp_path / name / "run", settings={**SETTINGS, "epochs": 1})
    assert_same_weights(tmp_path / "a" / "encoder.ckpt", tmp_path / "b" / "encoder.ckpt")


def test_bad_settings_name_the_config_key(tiny_dataset, tmp_path):
    with pytest.raises(ValueError, match="pretrain_images.queue_size"):
        _run(tiny_dataset, tmp_path / "run", settings={**SETTINGS, "queue_size": 100_000})
    with pytest.raises(ValueError, match="image_encoder.crop"):
        pretrain_images(
            tiny_dataset["train"], tiny_dataset["val"], tmp_path / "run2", tmp_path / "e.ckpt", tmp_path / "m.csv",
            {**MODEL, "crop": 64}, SETTINGS,
        )  # fmt: skip
