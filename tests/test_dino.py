"""DINOv2 pretraining of the image ViT: losses by hand, masks, schedules, parameter groups, views, a run."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from astroclip_pipeline.data.augmentations import random_crop_flip
from astroclip_pipeline.evaluate.rgb import legacysurvey_rgb
from astroclip_pipeline.evaluate.vit_attention import cls_attention_maps, plot_vit_attention
from astroclip_pipeline.models.image_encoder import ViTImageEncoder, encode_images, load_image_encoder
from astroclip_pipeline.models.image_preprocessing import viewer_rgb
from astroclip_pipeline.models.vit import VisionTransformer, ViTConfig
from astroclip_pipeline.train.dino import (
    DINOHead,
    DinoPretraining,
    DinoSettings,
    block_masks,
    cosine_rise,
    dino_loss,
    ibot_loss,
    koleo_loss,
    parameter_groups,
    pretrain_dino,
    teacher_probabilities,
    teacher_temperature,
)
from astroclip_pipeline.train.loop import last_checkpoint

from .training import CountSteps, PreemptAt, Preempted


def test_dino_loss_pairs_different_crops_only():
    # two prototypes; the student's logits are log-probabilities, so with temperature 1 its
    # distribution is exactly the one written here
    def logits(*p):
        return torch.log(torch.tensor(p))[None, None]

    student_global = torch.cat([logits(0.5, 0.5), logits(0.9, 0.1)])  # (2 crops, 1 image, 2)
    student_local = logits(0.2, 0.8)
    teacher = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    loss = dino_loss(student_global, student_local, teacher, temperature=1.0)
    # pairs: global0 vs teacher1, global1 vs teacher0, local vs teacher0 and teacher1
    expected = (-math.log(0.5) - math.log(0.9) - math.log(0.2) - math.log(0.8)) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_teacher_probabilities_are_centred_and_sharpened():
    logits = torch.tensor([[2.0, 1.0, 0.0]])
    center = torch.tensor([[1.0, 0.0, 0.0]])
    p = teacher_probabilities(logits, center, 0.5)
    expected = torch.softmax(torch.tensor([[1.0, 1.0, 0.0]]) / 0.5, dim=-1)
    torch.testing.assert_close(p, expected)


def test_ibot_loss_weights_every_image_equally():
    masks = torch.tensor([[True, False, False], [True, True, True], [False, False, False]])
    n = int(masks.sum())  # 4 masked patches: one of image 0, three of image 1
    student = torch.zeros(n, 2)  # uniform student: every patch costs log 2
    teacher = torch.tensor([[1.0, 0.0]] * n)
    # image 0: its one patch with weight 1; image 1: three patches with weight 1/3; image 2: none
    expected = (math.log(2) + 3 * math.log(2) / 3) / 3
    assert ibot_loss(student, teacher, masks, 1.0).item() == pytest.approx(expected)


def test_koleo_by_hand_and_that_spreading_lowers_it():
    # three unit vectors: e0, e1 and (e0 + 0.1 e1) normalised; nearest neighbours by hand
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]])
    u = x / x.norm(dim=1, keepdim=True)
    d01, d02, d12 = (u[0] - u[1]).norm(), (u[0] - u[2]).norm(), (u[1] - u[2]).norm()
    expected = -(torch.log(d02) + torch.log(min(d01, d12)) + torch.log(d02)) / 3
    assert koleo_loss(x).item() == pytest.approx(expected.item(), rel=1e-5)
    spread = torch.eye(4)
    clustered = torch.eye(4) * 0.01 + 1.0
    assert koleo_loss(spread) < koleo_loss(clustered)
    assert koleo_loss(torch.ones(1, 4)).item() == 0.0  # no neighbour: no term


def test_block_masks_hide_the_configured_share_of_images_in_rectangles():
    masks = block_masks(200, 12, 0.5, (0.1, 0.5), torch.Generator().manual_seed(0))
    assert masks.shape == (200, 144) and masks.dtype == torch.bool
    masked = masks.any(dim=1)
    assert masked.sum() == 100  # exactly the probability's share of the images
    ratios = masks[masked].float().mean(dim=1)
    assert ratios.max() <= 0.5 + 1e-6 and ratios.min() >= 0.05 and ratios.mean() > 0.2
    # block-wise, not scattered: most hidden patches have a hidden 4-neighbour
    grid = masks.reshape(200, 12, 12).float()
    padded = torch.nn.functional.pad(grid, (1, 1, 1, 1))
    neighbours = padded[:, :-2, 1:-1] + padded[:, 2:, 1:-1] + padded[:, 1:-1, :-2] + padded[:, 1:-1, 2:]
    assert ((neighbours > 0) & (grid > 0)).sum() / grid.sum() > 0.95
    assert not block_masks(10, 6, 0.0, (0.1, 0.5)).any()


def test_schedules_of_teacher_temperature_momentum_and_weight_decay():
    s = DinoSettings(warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=30)
    assert teacher_temperature(0, s) == pytest.approx(0.04)
    assert teacher_temperature(15, s) == pytest.approx(0.055)
    assert teacher_temperature(30, s) == teacher_temperature(100, s) == 0.07
    assert cosine_rise(0, 100, 0.992, 1.0) == pytest.approx(0.992)
    assert cosine_rise(50, 100, 0.992, 1.0) == pytest.approx(0.996)
    assert cosine_rise(100, 100, 0.992, 1.0) == pytest.approx(1.0)
    assert cosine_rise(100, 100, 0.001, 0.01) == pytest.approx(0.01)


def test_parameter_groups_follow_layer_decay_and_spare_norms_from_weight_decay():
    config = ViTConfig(image_size=16, patch_size=8, embed_dim=16, depth=3, n_heads=2)
    backbone, head = VisionTransformer(config), DINOHead(16, 32, 16, 8)
    s = DinoSettings(layer_decay=0.5, patch_embed_lr_mult=0.2)
    groups = parameter_groups(backbone, head, s)
    every = [p for g in groups for p in g["params"]]
    assert len(every) == len(list(backbone.parameters())) + len(list(head.parameters()))
    assert len({id(p) for p in every}) == len(every)  # each parameter in exactly one group

    def group_of(parameter):
        return next(g for g in groups if any(p is parameter for p in g["params"]))

    # L = 3 blocks: block i has layer i + 1 and rate 0.5^(4 - (i + 1)); embeddings layer 0
    assert group_of(backbone.blocks[0].attn.qkv.weight)["lr_mult"] == 0.5**3
    assert group_of(backbone.blocks[2].mlp[0].weight)["lr_mult"] == 0.5**1
    assert group_of(backbone.pos_embed)["lr_mult"] == group_of(backbone.cls_token)["lr_mult"] == 0.5**4
    assert group_of(backbone.patch_embed.proj.weight)["lr_mult"] == pytest.approx(0.2 * 0.5**4)
    assert group_of(backbone.norm.weight)["lr_mult"] == group_of(head.mlp[0].weight)["lr_mult"] == 1.0
    # no weight decay on biases, norms and LayerScale; decay on matrices and the positions
    for p in (backbone.blocks[0].attn.qkv.bias, backbone.blocks[1].ln_mlp.weight, backbone.blocks[1].ls_attn.gamma):
        assert group_of(p)["wd_mult"] == 0.0
    assert group_of(backbone.blocks[0].attn.qkv.weight)["wd_mult"] == group_of(backbone.pos_embed)["wd_mult"] == 1.0
    assert group_of(head.last_layer.weight)["last_layer"] and not group_of(head.mlp[0].weight)["last_layer"]


def test_random_crop_flip_cuts_exact_pixels_and_flips_both_ways():
    images = torch.arange(400 * 3 * 8 * 8, dtype=torch.float32).reshape(400, 3, 8, 8)
    crops = random_crop_flip(images, 4, torch.Generator().manual_seed(0))
    assert crops.shape == (400, 3, 4, 4)
    seen = {"rows": set(), "cols": set()}
    for image, crop in zip(images, crops, strict=True):
        found = False
        for flip_rows in (False, True):
            for flip_cols in (False, True):
                c = crop.flip(1) if flip_rows else crop
                c = c.flip(2) if flip_cols else c
                top, left = divmod(int(c[0, 0, 0] - image[0, 0, 0]), 8)
                if top <= 4 and left <= 4 and torch.equal(image[:, top : top + 4, left : left + 4], c):
                    found = True
                    seen["rows"].add(flip_rows)
                    seen["cols"].add(flip_cols)
        assert found
    assert seen == {"rows": {False, True}, "cols": {False, True}}
    with pytest.raises(ValueError, match="larger than"):
        random_crop_flip(images, 9)


def test_viewer_rgb_is_the_legacy_survey_viewers_mapping():
    images = torch.rand(3, 3, 10, 10, dtype=torch.float64) * 0.3 - 0.05
    expected = np.stack([legacysurvey_rgb(image.numpy()) for image in images]).transpose(0, 3, 1, 2)
    np.testing.assert_allclose(viewer_rgb(images).numpy(), expected, atol=1e-12)


TINY_MODEL = {"preset": "laptop", "crop": 24, "vit": {"embed_dim": 32, "depth": 2, "n_heads": 2}}
TINY_SETTINGS = {
    "epochs": 3, "batch_size": 16, "local_crops": 2, "local_crop": 16, "n_prototypes": 64,
    "head_hidden_dim": 32, "head_bottleneck_dim": 16, "warmup_teacher_temp_epochs": 2,
}  # fmt: skip


def test_views_are_rgb_crops_of_the_configured_sizes():
    s = {**TINY_SETTINGS, "degrade_probability": (1.0, 0.0, 0.0), "max_ebv": 0.0}
    module = DinoPretraining({**vars(ViTConfig.preset("laptop", image_size=24))}, s)
    images = torch.rand(5, 3, 32, 32) * 0.05
    global_views, local_views = module.crops(images, torch.Generator().manual_seed(0))
    assert global_views.shape == (2, 5, 3, 24, 24) and local_views.shape == (2, 5, 3, 16, 16)
    assert global_views.min() >= 0 and global_views.max() <= 1
    # view 1 is never blurred nor noised: it is exactly a crop of the RGB image
    rgb = viewer_rgb(images)
    for image, view in zip(rgb, global_views[1], strict=True):
        windows = image.unfold(1, 24, 1).unfold(2, 24, 1).permute(1, 2, 0, 3, 4).reshape(-1, 3, 24, 24)
        flips = [view, view.flip(1), view.flip(2), view.flip(1, 2)]
        assert any(torch.allclose(w, f) for w in windows for f in flips)
    with pytest.raises(ValueError, match="pretrain_dino.local_crop"):
        DinoPretraining({**vars(ViTConfig.preset("laptop", image_size=24))}, {**TINY_SETTINGS, "local_crop": 12})


def test_the_centres_follow_the_teacher_mean_and_stay_when_no_patch_is_masked():
    module = DinoPretraining({**vars(ViTConfig.preset("laptop", image_size=24))}, TINY_SETTINGS)
    m = module.settings.center_momentum
    center = torch.ones(1, 3)
    logits = torch.tensor([[1.0, 2.0, 3.0], [3.0, 4.0, 5.0]])
    module._update_center(center, logits)  # outside a trainer: this process's rows only
    torch.testing.assert_close(center, m * torch.ones(1, 3) + (1 - m) * torch.tensor([[2.0, 3.0, 4.0]]))
    before = center.clone()
    module._update_center(center, logits[:0])  # an iBOT batch with no masked patch
    torch.testing.assert_close(center, before)


@pytest.mark.parametrize("batchnorm", [False, True])
def test_at_initialisation_only_a_batchnorm_head_gives_each_galaxy_its_own_target(batchnorm):
    """Why the laptop recipe has ``head_batchnorm``: with LayerScale 1e-5 a fresh ViT's CLS token is
    the same for every image to ~1e-5, so the teacher's targets are too; once the centre has caught up
    with them they are uniform (the DINO loss sits at ln K) and nothing is learnt. BatchNorm in the
    head (DINO's ``use_bn_in_head``) normalises by the batch, which makes the small differences count."""
    torch.manual_seed(0)
    config = ViTConfig.preset("laptop", image_size=24)
    module = DinoPretraining(vars(config), {**TINY_SETTINGS, "head_batchnorm": batchnorm})
    images = viewer_rgb(torch.rand(16, 3, 24, 24) * 0.2)
    with torch.no_grad():
        logits = module.teacher_head(module.teacher.forward_tokens(images)[:, 0])
        targets = teacher_probabilities(logits, logits.mean(dim=0, keepdim=True), 0.04)
    spread = (targets - targets.mean(dim=0)).abs().max().item()
    if batchnorm:
        assert spread > 0.1
    else:
        assert spread < 1e-3 and targets.max().item() < 2.0 / targets.shape[1]  # uniform


def test_a_batchnorm_head_is_refused_under_ddp_on_cpu():
    from types import SimpleNamespace

    module = DinoPretraining(vars(ViTConfig.preset("laptop", image_size=24)), {**TINY_SETTINGS, "head_batchnorm": True})
    module._trainer = SimpleNamespace(world_size=2, strategy=SimpleNamespace(root_device=torch.device("cpu")))
    with pytest.raises(ValueError, match="pretrain_dino.head_batchnorm.*2 processes on cpu"):
        module.setup("fit")
    module._trainer = SimpleNamespace(world_size=1, strategy=SimpleNamespace(root_device=torch.device("cpu")))
    module.setup("fit")  # one process: the plain BatchNorm is exact
    assert isinstance(module.head.mlp[1], torch.nn.BatchNorm1d)


def _run(tiny_dataset, run_dir, callbacks=(), settings=TINY_SETTINGS):
    pretrain_dino(
        tiny_dataset["train"], tiny_dataset["val"], run_dir, run_dir.parent / "encoder.ckpt",
        run_dir.parent / "metrics.csv", TINY_MODEL, settings, callbacks=callbacks,
    )  # fmt: skip


def test_interrupted_dino_pretraining_resumes_and_writes_the_teacher(tiny_dataset, tmp_path):
    run_dir = tmp_path / "run"
    with pytest.raises(Preempted):
        _run(tiny_dataset, run_dir, callbacks=[PreemptAt(3)])
    saved = torch.load(last_checkpoint(run_dir), weights_only=False)
    assert saved["global_step"] == 3
    state = saved["state_dict"]
    assert {"dino_center", "ibot_center", "teacher.pos_embed", "teacher_head.last_layer.weight"} <= set(state)
    assert state["dino_center"].abs().sum() > 0  # the centre moved
    # the prototypes are frozen in the first epoch (5 steps of 16 of the 84 training images); the
    # teacher's average of equal tensors differs from them only by rounding
    prototypes = state["head.last_layer.weight"], state["teacher_head.last_layer.weight"]
    torch.testing.assert_close(*prototypes, rtol=0, atol=1e-7)

    counter = CountSteps()
    _run(tiny_dataset, run_dir, callbacks=[counter])
    final = torch.load(last_checkpoint(run_dir), weights_only=False)
    assert counter.steps == final["global_step"] - 3 > 0
    state = final["state_dict"]
    # the teacher is an average of past students: close to the student, not equal to it
    difference = (state["teacher.blocks.0.attn.qkv.weight"] - state["student.blocks.0.attn.qkv.weight"]).abs()
    assert 0 < difference.max() < 0.05
    encoder = load_image_encoder(tmp_path / "encoder.ckpt")
    assert isinstance(encoder, ViTImageEncoder) and encoder.crop == 24 and encoder.feature_dim == 32
    torch.testing.assert_close(encoder.backbone.pos_embed, state["teacher.pos_embed"])
    features = encode_images(encoder, np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32) * 0.1)
    assert features.shape == (3, 32) and torch.isfinite(features).all()

    plot_vit_attention(tmp_path / "encoder.ckpt", tiny_dataset["val"], tmp_path / "attention.png", n=3, seed=0)
    assert (tmp_path / "attention.png").read_bytes()[:4] == b"\x89PNG"
    maps = cls_attention_maps(encoder, np.random.default_rng(1).random((2, 3, 32, 32), dtype=np.float32) * 0.1)
    assert maps.shape == (2, 2, 3, 3) and np.all(maps.sum(axis=(2, 3)) < 1)  # 2 heads, 3 x 3 patches

    metrics = pd.read_csv(tmp_path / "metrics.csv")
    steps = metrics.dropna(subset=["teacher_temp"])
    assert steps.teacher_temp.iloc[0] == pytest.approx(0.04) and steps.teacher_temp.iloc[-1] == pytest.approx(0.07)
    assert steps.teacher_momentum.is_monotonic_increasing and steps.weight_decay.is_monotonic_increasing
    for column in ("train_dino_step", "train_ibot_step", "train_koleo_step", "val_loss", "lr-AdamW/layer3"):
        assert metrics[column].notna().any(), column
    prototypes = metrics["lr-AdamW/prototypes"].dropna()
    assert prototypes.iloc[0] == 0 and prototypes.iloc[-1] > 0  # frozen, then trained


class FlipSymmetricImages(torch.utils.data.Dataset):
    """Cutouts symmetric under both flips, so that the random flips of the crops leave them as they are."""

    def __init__(self, n: int = 8, size: int = 16):
        images = 0.05 * torch.rand(n, 3, size, size, generator=torch.Generator().manual_seed(5))
        images = images + images.flip(-1)
        self.images = images + images.flip(-2)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict:
        return {"image": self.images[index]}


def _teacher_after_two_steps(devices: int) -> dict:
    """Two epochs of one step over the same 8 cutouts, on one process (batch 8) or two (4 each, gloo
    DDP; Lightning's distributed sampler shuffles, but one step per epoch sees all 8 either way).

    Everything random per rank is switched off so that both see the same global batch: crops of the
    whole cutout, flips that change nothing, no blur, noise, reddening, masks or local crops, no
    drop path; KoLeo is off because its neighbours are sought within each rank's batch."""
    import lightning as L

    settings = {
        **TINY_SETTINGS, "epochs": 2, "batch_size": 8 // devices, "local_crops": 0, "mask_probability": 0.0,
        "degrade_probability": (0.0, 0.0, 0.0), "max_ebv": 0.0, "koleo_weight": 0.0, "warmup_epochs": 0,
        "freeze_last_layer_epochs": 0, "lr": 0.5, "teacher_momentum": 0.5,  # steps that show
    }  # fmt: skip
    torch.manual_seed(0)
    # No LayerScale: with its 1e-5 most gradients are so small that Adam's first step, about
    # lr * g / (|g| + 1e-8), turns rounding differences between 8 and 4 + 4 rows into visible ones.
    config = ViTConfig(image_size=16, patch_size=8, embed_dim=16, depth=2, n_heads=2, drop_path=0.0, layerscale=None)
    module = DinoPretraining(vars(config), settings)
    loader = torch.utils.data.DataLoader(FlipSymmetricImages(), batch_size=8 // devices, shuffle=False)
    trainer = L.Trainer(
        accelerator="cpu", devices=devices, strategy="ddp_spawn" if devices > 1 else "auto", max_epochs=2,
        logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        limit_val_batches=0, num_sanity_val_steps=0,
    )  # fmt: skip
    before = module.teacher.blocks[0].attn.qkv.weight.detach().clone()
    trainer.fit(module, loader)
    assert (module.teacher.blocks[0].attn.qkv.weight - before).abs().max() > 1e-3  # the teacher moved
    return {k: v.clone() for k, v in module.state_dict().items() if k.startswith(("teacher", "dino_center"))}


def test_ddp_on_two_processes_ends_with_the_teacher_of_one_process():
    single = _teacher_after_two_steps(devices=1)
    ddp = _teacher_after_two_steps(devices=2)
    assert single.keys() == ddp.keys()
    # the centre all-reduced over both ranks is the single process's centre
    torch.testing.assert_close(ddp["dino_center"], single["dino_center"], rtol=1e-5, atol=1e-7)
    assert single["dino_center"].abs().sum() > 0
    for name in single:
        torch.testing.assert_close(ddp[name], single[name], rtol=1e-4, atol=1e-5, msg=name)
