"""The ResNet backbone, published-weight import, Stein et al.'s scaling and the k-NN table."""

import argparse

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from astroclip_pipeline.evaluate.knn import knn_r2_table, reference_query_split
from astroclip_pipeline.models.image_encoder import (
    ImageEncoder,
    encode_images,
    import_published,
    load_image_encoder,
    save_image_encoder,
)
from astroclip_pipeline.models.image_preprocessing import stein_rgb
from astroclip_pipeline.models.resnet import ResNet, ResNetConfig

# ResNet-50's blocks per stage, as torchvision names them: layer{1..4}.{0..n-1}
RESNET50_BLOCKS = (3, 4, 6, 3)


def published_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under every key (and shape) of Stein et al.'s MoCo v2 checkpoint.

    Written out from torchvision's ResNet-50 naming, independently of our module, so that a
    renamed or reshaped parameter of ours fails the import test.
    """
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def conv(name, c_out, c_in, k):
        state[f"{name}.weight"] = torch.randn(c_out, c_in, k, k, generator=g) * (2.0 / (c_in * k * k)) ** 0.5

    def bn(name, c):
        state[f"{name}.weight"] = 1 + 0.1 * torch.randn(c, generator=g)
        state[f"{name}.bias"] = 0.1 * torch.randn(c, generator=g)
        state[f"{name}.running_mean"] = 0.1 * torch.randn(c, generator=g)
        state[f"{name}.running_var"] = 1 + 0.1 * torch.rand(c, generator=g)
        state[f"{name}.num_batches_tracked"] = torch.tensor(1000)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    c_in = 64
    for stage, (n_blocks, width) in enumerate(zip(RESNET50_BLOCKS, (64, 128, 256, 512), strict=True), start=1):
        for b in range(n_blocks):
            p = f"layer{stage}.{b}"
            conv(f"{p}.conv1", width, c_in, 1), bn(f"{p}.bn1", width)
            conv(f"{p}.conv2", width, width, 3), bn(f"{p}.bn2", width)
            conv(f"{p}.conv3", 4 * width, width, 1), bn(f"{p}.bn3", 4 * width)
            if b == 0:
                conv(f"{p}.downsample.0", 4 * width, c_in, 1), bn(f"{p}.downsample.1", 4 * width)
            c_in = 4 * width
    state["fc.0.weight"] = torch.randn(2048, 2048, generator=g) / 2048**0.5
    state["fc.0.bias"] = 0.01 * torch.randn(2048, generator=g)
    state["fc.2.weight"] = torch.randn(128, 2048, generator=g) / 2048**0.5
    state["fc.2.bias"] = 0.01 * torch.randn(128, generator=g)
    return state


def moco_checkpoint(backbone: dict[str, torch.Tensor]) -> dict:
    """A Lightning checkpoint laid out as Stein et al.'s: both encoders, the queues, hyper-parameters."""
    state = {f"encoder_q.{k}": v for k, v in backbone.items()}
    state |= {f"encoder_k.{k}": v.clone() for k, v in backbone.items()}
    state |= {"queue": torch.randn(128, 64), "queue_ptr": torch.zeros(1, dtype=torch.long)}
    state |= {"val_queue": torch.randn(128, 64), "val_queue_ptr": torch.zeros(1, dtype=torch.long)}
    hyper = argparse.Namespace(emb_dim=128, num_negatives=65536, encoder_momentum=0.996, softmax_temperature=0.2)
    return {"epoch": 10, "global_step": 1000, "state_dict": state, "hyper_parameters": hyper}


def reference_resnet50(state: dict[str, torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torchvision's ResNet-50 forward in eval mode, written with functional ops on the raw tensors."""

    def bn(name, h):
        return F.batch_norm(h, state[f"{name}.running_mean"], state[f"{name}.running_var"],
                            state[f"{name}.weight"], state[f"{name}.bias"], training=False, eps=1e-5)  # fmt: skip

    h = F.relu(bn("bn1", F.conv2d(x, state["conv1.weight"], stride=2, padding=3)))
    h = F.max_pool2d(h, 3, stride=2, padding=1)
    for stage, n_blocks in enumerate(RESNET50_BLOCKS, start=1):
        for b in range(n_blocks):
            p = f"layer{stage}.{b}"
            stride = 2 if b == 0 and stage > 1 else 1  # v1.5: the stride sits on the 3x3 convolution
            out = F.relu(bn(f"{p}.bn1", F.conv2d(h, state[f"{p}.conv1.weight"])))
            out = F.relu(bn(f"{p}.bn2", F.conv2d(out, state[f"{p}.conv2.weight"], stride=stride, padding=1)))
            out = bn(f"{p}.bn3", F.conv2d(out, state[f"{p}.conv3.weight"]))
            identity = h
            if b == 0:
                identity = bn(f"{p}.downsample.1", F.conv2d(h, state[f"{p}.downsample.0.weight"], stride=stride))
            h = F.relu(out + identity)
    features = h.mean(dim=(2, 3))
    projection = F.linear(F.relu(F.linear(features, state["fc.0.weight"], state["fc.0.bias"])),
                          state["fc.2.weight"], state["fc.2.bias"])  # fmt: skip
    return features, projection


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    backbone = published_state_dict()
    path = tmp_path_factory.mktemp("published") / "resnet50_moco.ckpt"
    torch.save(moco_checkpoint(backbone), path)
    return path, backbone


def test_published_moco_weights_load_and_give_the_same_features(published, tmp_path):
    path, backbone = published
    encoder = import_published(path, tmp_path / "image_encoder.ckpt", preset="paper", crop=32)
    cutouts = 0.05 * torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    features, projection = reference_resnet50(backbone, stein_rgb(cutouts[..., 4:36, 4:36]))
    with torch.no_grad():
        assert torch.allclose(encoder(cutouts), features, rtol=1e-4, atol=1e-5)
        assert torch.allclose(encoder.project(cutouts), projection, rtol=1e-4, atol=1e-5)
    assert encoder.feature_dim == 2048
    reloaded = load_image_encoder(tmp_path / "image_encoder.ckpt")
    with torch.no_grad():
        assert torch.equal(reloaded(cutouts), encoder(cutouts))
    assert torch.load(tmp_path / "image_encoder.ckpt", weights_only=True)["source"].startswith("published weights")


def test_import_names_every_missing_and_unexpected_key(published, tmp_path):
    _, backbone = published
    broken = dict(backbone)
    del broken["layer3.2.bn2.running_var"]
    broken["layer5.0.conv1.weight"] = torch.zeros(1)
    torch.save(moco_checkpoint(broken), tmp_path / "broken.ckpt")
    with pytest.raises(ValueError) as error:
        import_published(tmp_path / "broken.ckpt", tmp_path / "out.ckpt")
    message = str(error.value)
    assert "broken.ckpt" in message
    assert "missing keys (1): ['layer3.2.bn2.running_var']" in message
    assert "unexpected keys (1): ['layer5.0.conv1.weight']" in message
    assert not (tmp_path / "out.ckpt").exists()
    torch.save({"state_dict": {"model.weight": torch.zeros(2)}}, tmp_path / "other.ckpt")
    with pytest.raises(KeyError, match="no keys start with 'encoder_q.'"):
        import_published(tmp_path / "other.ckpt", tmp_path / "out.ckpt")


def test_presets_have_the_documented_sizes():
    paper = ResNet(ResNetConfig.preset("paper"))
    assert paper.feature_dim == 2048
    assert sum(p.numel() for p in paper.parameters()) == 23_508_032  # torchvision resnet50 without fc
    laptop = ImageEncoder(ResNetConfig.preset("laptop"), crop=48, head=(128, 128))
    assert laptop(torch.zeros(2, 3, 64, 64)).shape == (2, 128)
    assert laptop.project(torch.zeros(2, 3, 64, 64)).shape == (2, 128)
    with pytest.raises(ValueError, match="unknown image-encoder preset 'huge'"):
        ResNetConfig.preset("huge")


def test_stein_scaling():
    # zero flux is black, bright flux saturates at 1, and the channels come out as z, r, g
    assert torch.equal(stein_rgb(torch.zeros(1, 3, 2, 2)), torch.zeros(1, 3, 2, 2))
    assert torch.equal(stein_rgb(torch.full((1, 3, 2, 2), 100.0)), torch.ones(1, 3, 2, 2))
    only_z = torch.zeros(1, 3, 1, 1)
    only_z[0, 2] = 0.05
    rgb = stein_rgb(only_z)[0, :, 0, 0]
    assert rgb[0] > 0 and rgb[1] == 0 and rgb[2] == 0
    # by hand: x = 0.05 in z, scale 2.2; I = (0.05*2.2 + 0.03 + 0.03 + 0.03)/3; fI = asinh(20 I)/sqrt(20)
    intensity = (0.05 * 2.2 + 0.09) / 3
    expected = 0.05 * (2.2 + 0.03 * np.arcsinh(20 * intensity) / np.sqrt(20) / intensity)
    assert rgb[0].item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="expected grz images"):
        stein_rgb(torch.zeros(3, 8, 8))


def test_encoder_file_round_trip_and_batched_encoding(tmp_path):
    torch.manual_seed(0)
    encoder = ImageEncoder(ResNetConfig("basic", (1, 1, 1, 1), 8), crop=16, head=(64, 32)).eval()
    save_image_encoder(encoder, tmp_path / "enc.ckpt", source="test")
    images = torch.rand(10, 3, 20, 20)
    features = encode_images(load_image_encoder(tmp_path / "enc.ckpt"), images.numpy(), batch_size=3)
    with torch.no_grad():
        assert torch.allclose(features, encoder(images), atol=1e-6)
    with pytest.raises(KeyError, match="not an image-encoder file"):
        torch.save({"weights": 1}, tmp_path / "other.pt")
        load_image_encoder(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="crop 24 is larger than the 20x20 cutouts"):
        ImageEncoder(ResNetConfig("basic", (1, 1, 1, 1), 8), crop=24)(images)


def test_knn_table_scores_informative_features_above_noise():
    rng = np.random.default_rng(0)
    n = 600
    z = rng.uniform(0, 0.5, n)
    mass = rng.normal(10.5, 0.5, n)
    properties = pd.DataFrame({"Z_HP": z, "LOGMSTAR": mass})
    features = {
        "knows both": np.stack([z, mass / 10, rng.normal(size=n)], axis=1),
        "knows redshift": np.stack([z * 100, rng.normal(size=n)], axis=1),
        "noise": rng.normal(size=(n, 4)),
    }
    table = knn_r2_table(features, properties, k=16).set_index("features")
    assert table.loc["knows both", "Z_HP"] > 0.9 and table.loc["knows both", "LOGMSTAR"] > 0.8
    assert table.loc["knows redshift", "Z_HP"] > 0.8 and table.loc["knows redshift", "LOGMSTAR"] < 0.1
    assert table.loc["noise"].abs().max() < 0.15
    reference, query = reference_query_split(n, seed=0)
    assert len(np.intersect1d(reference, query)) == 0 and len(reference) + len(query) == n
