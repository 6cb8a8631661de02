"""The supervised baselines of the v2 table: ResNet18 on images, Conv+Att on spectra."""

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import r2_score

from astroclip_pipeline.evaluate.headline import headline_table
from astroclip_pipeline.evaluate.knn import reference_query_split
from astroclip_pipeline.evaluate.property_prediction import SUPERVISED, V2_SUFFIX, r2_table
from astroclip_pipeline.files import open_hdf5
from astroclip_pipeline.models.resnet import ResNet, ResNetConfig
from astroclip_pipeline.models.spender import ConvAttentionConfig, InstanceNorm, SpectrumConvAttention
from astroclip_pipeline.train.supervised import (
    BaselineSettings,
    Inputs,
    build_baseline,
    fit_regressor,
    masked_mse,
    predict,
    random_flips,
    train_baseline,
)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small networks: one thread. Two on a 2-core machine that is busy with anything else make
    OpenMP threads wait on each other, and these tests 30 times slower (52 s instead of 1.7 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_resnet18_preset_is_torchvisions_resnet18():
    network = ResNet(ResNetConfig.preset("resnet18"))
    assert [len(getattr(network, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    # torchvision's resnet18 has 11,689,512 parameters, 513,000 of them in its 1000-class fc
    assert sum(p.numel() for p in network.parameters()) == 11_689_512 - 513_000
    assert network(torch.zeros(2, 3, 48, 48)).shape == (2, 512)


def test_conv_att_pools_with_attention_weights_over_wavelength():
    torch.manual_seed(0)
    for preset, positions, channels in (("astroclip", 4, 16), ("spender", 36, 256)):
        network = SpectrumConvAttention(ConvAttentionConfig.preset(preset), n_outputs=5, n_aux=2)
        spectra = torch.randn(3, 1945)
        values, weights = network.attention(spectra)
        assert values.shape == weights.shape == (3, channels, positions)
        assert torch.allclose(weights.sum(dim=-1), torch.ones(3, channels))
        assert network(spectra, torch.zeros(3, 2)).shape == (3, 5)
    with pytest.raises(ValueError, match="2 auxiliary inputs, got 0"):
        network(spectra)
    with pytest.raises(ValueError, match="unknown Conv\\+Att preset"):
        ConvAttentionConfig.preset("large")


def test_instance_norm_is_torchs():
    x = torch.randn(4, 8, 100) * 3 + 2
    assert torch.allclose(InstanceNorm()(x), torch.nn.InstanceNorm1d(8)(x), atol=1e-5)


def test_baselines_regress_every_target_at_once():
    settings = BaselineSettings(resnet_width=4)
    images = Inputs(torch.rand(2, 3, 32, 32))
    spectra = Inputs(torch.randn(2, 300), torch.zeros(2, 2))
    assert build_baseline("resnet18", 5, settings)(images).shape == (2, 5)
    assert build_baseline("conv_att", 3, settings)(spectra).shape == (2, 3)
    with pytest.raises(ValueError, match="unknown supervised baseline 'vit'"):
        build_baseline("vit", 5, settings)


def test_masked_mse_counts_only_known_targets():
    predicted = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    target = torch.tensor([[0.0, float("nan")], [3.0, 2.0]])
    assert masked_mse(predicted, target).item() == pytest.approx((1 + 0 + 4) / 3)


def test_flips_keep_each_image_or_mirror_it():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4).repeat(8, 1, 1, 1)
    flipped = random_flips(images, torch.Generator().manual_seed(0))
    for original, image in zip(images, flipped, strict=True):
        mirrors = (original, original.flip(-1), original.flip(-2), original.flip(-1, -2))
        assert any(torch.equal(image, mirror) for mirror in mirrors)
    assert not torch.equal(flipped, images)


def _line_spectra(n: int, generator: torch.Generator) -> tuple[Inputs, torch.Tensor]:
    """Spectra with one emission line whose position (the target) varies: a redshift in miniature."""
    position = torch.rand(n, generator=generator) * 200 + 50
    pixels = torch.arange(300.0)
    flux = torch.exp(-0.5 * ((pixels - position[:, None]) / 3) ** 2) + 0.05 * torch.randn(n, 300, generator=generator)
    target = (position - 150) / 58  # about unit variance
    return Inputs(flux, torch.zeros(n, 2)), target[:, None]


def _blob_images(n: int, generator: torch.Generator) -> tuple[Inputs, torch.Tensor]:
    """Images of a round galaxy whose size (the target) varies."""
    size = torch.rand(n, generator=generator) * 4 + 1
    yy, xx = torch.meshgrid(torch.arange(16.0) - 7.5, torch.arange(16.0) - 7.5, indexing="ij")
    blob = torch.exp(-0.5 * (xx**2 + yy**2) / size[:, None, None] ** 2)
    images = blob[:, None].repeat(1, 3, 1, 1) + 0.05 * torch.randn(n, 3, 16, 16, generator=generator)
    return Inputs(images), ((size - 3) / 1.15)[:, None]


@pytest.mark.parametrize("name, make", [("conv_att", _line_spectra), ("resnet18", _blob_images)])
def test_training_learns_a_property_from_the_data(name, make):
    generator = torch.Generator().manual_seed(1)
    train, val, test = make(512, generator), make(128, generator), make(256, generator)
    torch.manual_seed(0)
    model = build_baseline(name, 1, BaselineSettings(resnet_width=4))
    settings = BaselineSettings(epochs=8, batch_size=32, lr=3e-3, patience=8)
    history = fit_regressor(model, train, val, settings)
    score = r2_score(test[1][:, 0].numpy(), predict(model, test[0])[:, 0].numpy())
    assert score > 0.7, (score, history)
    assert history.val_loss.iloc[-1] < 0.5 * history.val_loss.iloc[0]


def test_early_stopping_restores_the_best_validation_weights():
    generator = torch.Generator().manual_seed(2)
    (x_train, y_train), (x_val, y_val) = _line_spectra(256, generator), _line_spectra(64, generator)
    # validation targets of the opposite sign: the better the network learns, the worse it validates
    torch.manual_seed(0)
    model = build_baseline("conv_att", 1, BaselineSettings())
    history = fit_regressor(
        model, (x_train, y_train), (x_val, -y_val), BaselineSettings(epochs=20, batch_size=32, lr=3e-3, patience=2)
    )
    assert len(history) < 20  # stopped early
    best = history.val_loss.idxmin()
    assert history.best.tolist() == [i == best for i in range(len(history))]
    assert len(history) == best + 3  # patience 2: two epochs without improvement after the best
    restored = masked_mse(predict(model, x_val), -y_val).item()
    assert restored == pytest.approx(history.val_loss[best], rel=1e-5)
    assert restored < history.val_loss.iloc[-1]


def test_batch_larger_than_the_training_set_names_the_key():
    generator = torch.Generator().manual_seed(0)
    data = _line_spectra(8, generator)
    with pytest.raises(ValueError, match="baselines.batch_size"):
        fit_regressor(build_baseline("conv_att", 1, BaselineSettings()), data, data, BaselineSettings(batch_size=16))


def test_train_baseline_predicts_the_knn_query_galaxies(tiny_dataset, tmp_path):
    settings = {"epochs": 1, "batch_size": 16, "resnet_width": 4, "max_train_galaxies": 40, "max_val_galaxies": 10}
    held_out = []
    for split in ("val", "test"):
        with open_hdf5(tiny_dataset[split]) as h5:
            held_out.append(h5["TARGETID"][()])
    held_out = np.concatenate(held_out)
    _, query = reference_query_split(len(held_out), seed=3)
    for name in ("resnet18", "conv_att"):
        output = tmp_path / f"{name}.parquet"
        args = (tiny_dataset["train"], tiny_dataset["val"], tiny_dataset["test"], output)
        train_baseline(name, *args, settings, crop=24, seed=3)
        predictions = pd.read_parquet(output)
        assert set(predictions.method) == {SUPERVISED[name]}
        assert set(predictions.target) == {"Z_HP", "LOGMSTAR", "SSFR", "AGE", "Z_MW"}
        for _, group in predictions.groupby("target"):
            assert sorted(group.TARGETID) == sorted(held_out[query])
        assert np.isfinite(predictions.predicted).all()


def test_the_tables_take_the_baseline_rows_beside_the_published_values():
    rng = np.random.default_rng(0)
    rows = []
    for method in ("photometry + MLP" + V2_SUFFIX, SUPERVISED["resnet18"], SUPERVISED["conv_att"]):
        for target in ("Z_HP", "LOGMSTAR", "SSFR", "AGE", "Z_MW"):
            true = rng.normal(size=50)
            rows.append(pd.DataFrame({"method": method, "target": target, "TARGETID": np.arange(50),
                                      "true": true, "predicted": true + rng.normal(0, 0.5, 50)}))  # fmt: skip
    table = r2_table(pd.concat(rows), "mock").set_index("method")
    published = "AstroCLIP v2 R2 Z_HP (different data: DESI, not the mock survey)"
    assert table.loc[SUPERVISED["conv_att"], "protocol"] == "supervised"
    assert table.loc[SUPERVISED["conv_att"], published] == 0.99
    assert table.loc[SUPERVISED["resnet18"], published] == 0.77
    headline = headline_table(table.reset_index(), None).set_index("model")
    resnet = headline.loc["ResNet18, supervised"]
    assert resnet["redshift R2"] == pytest.approx(table.loc[SUPERVISED["resnet18"], "R2 Z_HP"])
    assert resnet["redshift R2, published"] == 0.77 and resnet["note"] == ""
    without = headline_table(table.drop(index=SUPERVISED["conv_att"]).reset_index(), None).set_index("model")
    assert "baselines.enabled" in without.loc["Conv+Att, supervised", "note"]


def _dataset_file(path, n: int, rng: np.random.Generator) -> None:
    with open_hdf5(path, "w") as h5:
        h5["TARGETID"] = np.arange(n)
        h5["image"] = rng.random((n, 3, 8, 8), dtype=np.float32)
        h5["spectrum"] = rng.random((n, 50), dtype=np.float32)
        h5["ivar"] = np.ones((n, 50), np.float32)
        for target in ("Z_HP", "LOGMSTAR"):
            h5[target] = rng.normal(size=n)


def test_a_validation_split_without_references_stops_with_the_key_to_change(tmp_path):
    rng = np.random.default_rng(0)
    paths = {split: tmp_path / f"{split}.h5" for split in ("train", "val", "test")}
    for split, n in (("train", 20), ("val", 1), ("test", 3)):
        _dataset_file(paths[split], n, rng)
    # a seed whose reference half leaves out the one validation galaxy (row 0 of the held-out four)
    seed = next(s for s in range(100) if 0 not in reference_query_split(4, s)[0])
    with pytest.raises(ValueError, match="val.h5: none of its 1 galaxies .* dataset.split"):
        train_baseline("conv_att", *paths.values(), tmp_path / "out.parquet", {"batch_size": 4}, crop=8, seed=seed)


def test_a_catalogue_with_fewer_properties_gives_rows_for_those_it_has(tmp_path):
    """Real data: PROVABGS gives redshift and stellar mass, not the mock's five."""
    rng = np.random.default_rng(1)
    paths = {split: tmp_path / f"{split}.h5" for split in ("train", "val", "test")}
    for split, n in (("train", 20), ("val", 4), ("test", 4)):
        _dataset_file(paths[split], n, rng)
    output = tmp_path / "out.parquet"
    train_baseline("conv_att", *paths.values(), output, {"batch_size": 4, "epochs": 1}, crop=8, seed=0)
    predictions = pd.read_parquet(output)
    assert set(predictions.target) == {"Z_HP", "LOGMSTAR"} and len(predictions) == 2 * 4
