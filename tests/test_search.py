"""Similarity search: exact top-k against brute force, the four query/answer pairs, the command."""

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from astroclip_pipeline.evaluate.search import (
    PAIRS,
    embed_cutout,
    main,
    read_embedding_files,
    search_by_embedding,
    search_by_targetid,
    top_k,
)


def normalised(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_force(query, candidates, k, exclude=None):
    """Every similarity, a full stable sort: the reference the fast search must equal."""
    similarity = candidates @ query
    order = [i for i in np.lexsort((np.arange(len(candidates)), -similarity)) if i != exclude]
    return np.array(order[:k]), similarity[order[:k]]


def test_top_k_equals_brute_force_with_ties_and_exclusion():
    rng = np.random.default_rng(1)
    candidates = normalised(rng, 3000, 32)
    candidates[2000:2010] = candidates[5]  # ten exact copies of row 5: ties must come out by row
    queries = np.concatenate([candidates[[5, 17]], normalised(rng, 40, 32)])
    exclude = np.concatenate([[5, 17], rng.integers(0, 3000, 40)])
    indices, similarities = top_k(queries, candidates, k=15, exclude=exclude, chunk=7)
    for q in range(len(queries)):
        expected, expected_sim = brute_force(queries[q], candidates, 15, exclude[q])
        np.testing.assert_array_equal(indices[q], expected)
        np.testing.assert_allclose(similarities[q], expected_sim, rtol=0, atol=1e-6)
    assert 5 not in indices[0] and list(indices[0][:10]) == list(range(2000, 2010))


def test_top_k_rejects_impossible_requests():
    candidates = normalised(np.random.default_rng(0), 5, 4)
    with pytest.raises(ValueError, match="only 4 candidates"):
        top_k(candidates[:1], candidates, k=5, exclude=np.array([0]))
    with pytest.raises(ValueError, match="8-d"):
        top_k(np.ones((1, 8)), candidates, k=1)


@pytest.fixture
def embedding_file(tmp_path):
    """An embedding file as the embed rule writes it: 200 galaxies, image and spectrum, 16-d."""
    rng = np.random.default_rng(2)
    path = tmp_path / "test.h5"
    spectrum = normalised(rng, 200, 16)
    # each image embedding near its own spectrum's, as alignment makes them
    image = spectrum + 0.3 * normalised(rng, 200, 16)
    image /= np.linalg.norm(image, axis=1, keepdims=True)
    with h5py.File(path, "w") as h5:
        h5["TARGETID"] = np.arange(1000, 1200, dtype=np.int64)
        h5["image_embedding"] = image
        h5["spectrum_embedding"] = spectrum
        h5["Z_HP"] = rng.uniform(0, 0.6, 200)
        h5["LOGMSTAR"] = rng.uniform(8, 12, 200)
    return path


@pytest.mark.parametrize("pair", list(PAIRS))
def test_each_pair_searches_the_right_columns(embedding_file, pair):
    embeddings = read_embedding_files([embedding_file])
    query_column, answer_column = PAIRS[pair]
    table = search_by_targetid(embeddings, 1042, pair, k=8)
    expected, expected_sim = brute_force(
        embeddings[query_column][42],
        embeddings[answer_column],
        8,
        exclude=42 if query_column == answer_column else None,
    )
    np.testing.assert_array_equal(table["TARGETID"], 1000 + expected)
    np.testing.assert_allclose(table["similarity"], expected_sim, atol=1e-6)
    np.testing.assert_array_equal(table["Z_HP"], embeddings["Z_HP"][expected])
    assert list(table["rank"]) == list(range(1, 9))
    if query_column != answer_column:  # aligned partners: the galaxy's own other modality comes first
        assert table["TARGETID"].iloc[0] == 1042
    else:
        assert 1042 not in set(table["TARGETID"])


def test_search_by_embedding_normalises_the_query(embedding_file):
    embeddings = read_embedding_files([embedding_file])
    table = search_by_embedding(embeddings, 7.5 * embeddings["spectrum_embedding"][3], "spectrum", k=3)
    assert table["TARGETID"].iloc[0] == 1003
    assert table["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-6)


def test_several_files_are_one_search_space(embedding_file, tmp_path):
    other = tmp_path / "val.h5"
    with h5py.File(embedding_file, "r") as src, h5py.File(other, "w") as dst:
        dst["TARGETID"] = src["TARGETID"][()] + 1000
        for key in ("image_embedding", "spectrum_embedding", "Z_HP"):  # no LOGMSTAR here
            dst[key] = src[key][()]
    embeddings = read_embedding_files([embedding_file, other])
    assert len(embeddings["TARGETID"]) == 400 and "LOGMSTAR" not in embeddings
    # the same galaxy in the other file has identical embeddings: it is the nearest image
    table = search_by_targetid(embeddings, 1042, "image->image", k=1)
    assert table["TARGETID"].iloc[0] == 2042


def test_command_prints_neighbours_and_names_what_is_wrong(embedding_file, capsys):
    assert main([str(embedding_file), "--targetid", "1010", "--pair", "spectrum->image", "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split() == ["rank", "TARGETID", "similarity", "Z_HP", "LOGMSTAR"]
    assert out.splitlines()[1].split()[1] == "1010"
    with pytest.raises(SystemExit) as exit_info:
        main([str(embedding_file), "--targetid", "5"])
    assert exit_info.value.code == 2
    assert f"TARGETID 5 is not in {embedding_file}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(embedding_file), "--targetid", "1010", "--pair", "image->photometry"])
    assert "unknown query/answer pair 'image->photometry'" in capsys.readouterr().err


def test_module_runs_as_a_command(embedding_file, tmp_path):
    csv = tmp_path / "neighbours.csv"
    command = [sys.executable, "-m", "astroclip_pipeline.evaluate.search", str(embedding_file), "--targetid", "1001"]
    done = subprocess.run([*command, "--csv", str(csv), "-k", "4"], capture_output=True, text=True, check=True)
    assert "1001" in done.stdout.splitlines()[1]  # image -> spectrum by default: its own spectrum first
    assert len(csv.read_text().splitlines()) == 5


# --- queries from outside the files, through the model ----------------------------------------------


@pytest.fixture(scope="module")
def small_model():
    """A small random AstroCLIP model: what matters is that a query and the files agree."""
    import torch

    from astroclip_pipeline.models.astroclip import AstroCLIP
    from astroclip_pipeline.models.image_encoder import ImageEncoder
    from astroclip_pipeline.models.resnet import ResNetConfig
    from astroclip_pipeline.models.specformer import SpecFormer, SpecFormerConfig

    torch.manual_seed(0)
    image_encoder = ImageEncoder(ResNetConfig("basic", (1, 1, 1, 1), 4), crop=24, head=(32, 16))
    spectrum_encoder = SpecFormer(SpecFormerConfig(embed_dim=16, n_layers=1, n_heads=2))
    return AstroCLIP(image_encoder, spectrum_encoder, embed_dim=16, n_heads=2).eval()


def _embedding_file(path, model, images, flux, ivar, targetids):
    """What the embed rule writes for these galaxies."""
    import torch

    as_tensor = lambda a: torch.as_tensor(a, dtype=torch.float32)  # noqa: E731
    image, spectrum = model.embed(as_tensor(images), as_tensor(flux), as_tensor(ivar))
    with h5py.File(path, "w") as h5:
        h5["TARGETID"] = np.asarray(targetids, dtype=np.int64)
        h5["image_embedding"] = image.numpy()
        h5["spectrum_embedding"] = spectrum.numpy()


def test_a_cutout_file_finds_its_own_galaxy(small_model, tmp_path):
    from tests.loopback import cutout_fits_bytes, make_cutout

    positions = [(150.0 + i, 2.0 + 0.5 * i) for i in range(12)]
    images = np.stack([make_cutout(ra, dec, "grz", 32) for ra, dec in positions])
    _embedding_file(tmp_path / "e.h5", small_model, images, np.ones((12, 200)), np.ones((12, 200)), range(100, 112))
    cutout = tmp_path / "query.fits"  # planes written z, g, r: the BAND cards say which is which
    cutout.write_bytes(cutout_fits_bytes(*positions[7], bands="grz", size=32, order="zgr"))
    embeddings = read_embedding_files([tmp_path / "e.h5"])
    table = search_by_embedding(embeddings, embed_cutout(small_model, cutout), "image", k=3)
    assert table["TARGETID"].iloc[0] == 107 and table["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-5)
    no_z = Path(__file__).parent / "data/cases/c6_cutout_no_z_coverage.fits"  # z plane all zero
    with pytest.raises(ValueError, match="no_data_in_band: z"):
        embed_cutout(small_model, no_z)
    small = tmp_path / "small.fits"
    small.write_bytes(cutout_fits_bytes(*positions[0], bands="grz", size=16))
    with pytest.raises(ValueError, match="crop 24 is larger than the 16x16"):
        embed_cutout(small_model, small)


def test_a_coadd_spectrum_finds_its_own_galaxy_on_the_models_grid(small_model, tmp_path, capsys):
    import torch

    from astroclip_pipeline.models.astroclip import save_astroclip
    from astroclip_pipeline.sources.desi import rebin_spectra, wavelength_grid
    from astroclip_pipeline.sources.desi_coadd import coadd_targetids, read_coadd

    coadd_path = Path(__file__).parent / "data/desi/coadd-4-80613-thru20210324.fits"
    (target,) = coadd_targetids(coadd_path)  # the sample file holds one target
    coadd = read_coadd(coadd_path, [target])
    # the dataset rows of a model trained on the DESI grid coarsened by 4 (the laptop default): the
    # coadd's target fifth among five others, its spectrum scaled and tilted
    flux, ivar = rebin_spectra(coadd.flux, np.where(coadd.mask == 0, coadd.ivar, 0.0), 4)
    tilts = np.linspace(0.5, 1.5, flux.shape[1])
    flux = np.concatenate([flux * s * tilts**p for s, p in ((1, 1), (2, -1), (0.5, 2), (1, -2))] + [flux])
    ivar = np.repeat(ivar, 5, axis=0)
    targetids = np.array([1, 2, 3, 4, target])
    images = np.random.default_rng(0).normal(size=(5, 3, 32, 32))
    _embedding_file(tmp_path / "e.h5", small_model, images, flux, ivar, targetids)
    dataset = tmp_path / "val.h5"
    with h5py.File(dataset, "w") as h5:
        h5["wavelength"] = wavelength_grid(4)
    model_path = tmp_path / "astroclip.ckpt"
    save_astroclip(small_model, model_path, settings={})

    command = [str(tmp_path / "e.h5"), "--coadd", str(coadd_path), "--targetid", str(target)]
    command += ["--model", str(model_path), "--dataset", str(dataset), "--answer", "spectrum", "-k", "2"]
    assert main(command) == 0
    first = capsys.readouterr().out.splitlines()[1].split()
    assert int(first[1]) == target and float(first[2]) == pytest.approx(1.0, abs=1e-4)

    with h5py.File(dataset, "w") as h5:  # a grid that is not the coadd's coarsened
        h5["wavelength"] = np.linspace(3500, 9900, 1000)
    with pytest.raises(SystemExit):
        main(command)
    assert "does not coarsen onto the model's 1000-pixel grid" in capsys.readouterr().err
    assert torch.is_grad_enabled()  # the queries leave autograd as they found it


def test_rebin_spectra_is_the_inverse_variance_weighted_mean():
    from astroclip_pipeline.sources.desi import rebin_spectra

    flux = np.array([[1.0, 3.0, 2.0, 5.0, 7.0]])
    ivar = np.array([[1.0, 3.0, 0.0, 0.0, 2.0]])
    binned, weight = rebin_spectra(flux, ivar, 2)
    np.testing.assert_allclose(binned, [[2.5, 0.0]])  # (1*1 + 3*3)/4; no weight: 0
    np.testing.assert_allclose(weight, [[4.0, 0.0]])
