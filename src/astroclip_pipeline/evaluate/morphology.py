"""Galaxy morphology from the embeddings: the AstroCLIP v2 Galaxy Zoo DECaLS classification.

Protocol (Parker et al. 2024; the official ``downstream_tasks/morphology_classification``):
the held-out galaxies are cross-matched by sky position with the GZD-5 volunteer catalogue;
galaxies with fewer than 3 votes on the first question are dropped; the first 80% (in the
held-out files' order, which is random in TARGETID) train and the last 20% test. Per question, an
MLP (3 hidden layers of 256, dropout 0.2) learns the ``_debiased`` vote fractions as soft
targets; a test galaxy counts for a question only when that question got more than 34 votes.
Scores per question: accuracy of the most-voted answer and F1 weighted by answer frequency.

The official code ends its model in a softmax and then applies ``CrossEntropyLoss``, which applies
another: here the loss is the cross-entropy of the soft targets with one log-softmax of the
logits. The held-out order is used instead of the catalogue's file order because the image
features before alignment exist for the held-out galaxies only, and every feature set has to be
scored on the same galaxies.
"""

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import f1_score
from sklearn.preprocessing import StandardScaler
from torch import nn

from ..files import atomic_path, open_hdf5
from ..sources.galaxy_zoo import QUESTIONS, answer_columns, cross_match, read_volunteer_catalogue, total_column
from .adaptive_moments import dataset_moments
from .embeddings import read_embedding_files

#: The v2 paper's headline (mean over questions) morphology accuracy, by our feature-set names.
PUBLISHED_ACCURACY = {
    "AstroCLIP image embedding": 0.76,
    "image backbone before alignment": 0.78,  # AstroDINO in v2; Stein et al.'s ResNet scores 0.76
}
FIRST_QUESTION = "smooth-or-featured"
#: The classical-measurement row: r-band adaptive moments and the g, r, z magnitudes.
MOMENTS_FEATURES = "adaptive moments (r-band axis ratio, size) and magnitudes"


@dataclass(frozen=True)
class MorphologyProtocol:
    """The v2 protocol's numbers (see the module docstring); config block ``morphology``."""

    match_radius_arcsec: float = 0.5
    min_total_votes: int = 3
    test_min_votes: int = 34
    train_fraction: float = 0.8
    epochs: int = 25
    batch_size: int = 256
    lr: float = 1e-3
    hidden: int = 256
    dropout: float = 0.2


def match_labels(ra: np.ndarray, dec: np.ndarray, catalogue: pd.DataFrame, radius_arcsec: float) -> pd.DataFrame:
    """The catalogue row of each galaxy (row-aligned with ``ra``, ``dec``), NaN where unmatched.

    Returns every question's total votes and debiased fractions plus ``matched`` (bool) and
    ``separation_arcsec``.
    """
    index, separation = cross_match(ra, dec, catalogue, radius_arcsec)
    columns = [c for q in QUESTIONS for c in [total_column(q), *answer_columns(q, "_debiased")]]
    values = catalogue[columns].to_numpy(dtype=float)
    labels = np.where((index >= 0)[:, None], values[np.maximum(index, 0)], np.nan)
    frame = pd.DataFrame(labels, columns=columns)
    frame.insert(0, "matched", index >= 0)
    frame.insert(1, "separation_arcsec", np.where(index >= 0, separation, np.nan))
    return frame


def protocol_rows(labels: pd.DataFrame, protocol: MorphologyProtocol) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices: matched galaxies with at least ``min_total_votes`` on the first
    question, the first ``train_fraction`` of them training and the rest testing."""
    first_total = labels[total_column(FIRST_QUESTION)].to_numpy()
    kept = np.flatnonzero(labels["matched"].to_numpy() & (np.nan_to_num(first_total) >= protocol.min_total_votes))
    n_train = int(round(protocol.train_fraction * len(kept)))
    return kept[:n_train], kept[n_train:]


def question_rows(labels: pd.DataFrame, question: str, rows: np.ndarray, min_votes: float) -> np.ndarray:
    """The ``rows`` whose ``question`` got more than ``min_votes`` votes (and so has fractions)."""
    total = np.nan_to_num(labels[total_column(question)].to_numpy()[rows])
    fractions = labels[answer_columns(question, "_debiased")].to_numpy()[rows]
    return rows[(total > min_votes) & np.isfinite(fractions).all(axis=1)]


def accuracy(true_fractions: np.ndarray, predicted: np.ndarray) -> float:
    """Share of galaxies whose most probable predicted answer is the most-voted one; (n, n_answers) each."""
    return float(np.mean(np.argmax(true_fractions, axis=1) == np.argmax(predicted, axis=1)))


def weighted_f1(true_fractions: np.ndarray, predicted: np.ndarray) -> float:
    """F1 per answer (most-voted against most probable), averaged with weights = the answers' test
    counts (scikit-learn's ``average="weighted"``, as the official code)."""
    true, guess = np.argmax(true_fractions, axis=1), np.argmax(predicted, axis=1)
    return float(f1_score(true, guess, average="weighted", zero_division=0))


def soft_cross_entropy(logits: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """Mean over galaxies of -Σ_answers f log softmax(logits): one softmax, on the logits."""
    return -(fractions * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


def _classifier(n_features: int, n_answers: int, protocol: MorphologyProtocol) -> nn.Module:
    layers, width = [], n_features
    for _ in range(3):
        layers += [nn.Linear(width, protocol.hidden), nn.ReLU(), nn.Dropout(protocol.dropout)]
        width = protocol.hidden
    return nn.Sequential(*layers, nn.Linear(width, n_answers))


def train_classifier(
    x: np.ndarray, fractions: np.ndarray, protocol: MorphologyProtocol, seed: int
) -> tuple[StandardScaler, nn.Module]:
    """Fit the per-question MLP on standardised features ``x`` (n, d) and soft targets (n, n_answers).

    Galaxies are drawn with weights proportional to their largest fraction (confident labels more
    often), as the official code's weighted sampler does.
    """
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    scaler = StandardScaler().fit(x)
    inputs = torch.as_tensor(scaler.transform(x), dtype=torch.float32)
    targets = torch.as_tensor(fractions, dtype=torch.float32)
    model = _classifier(x.shape[1], fractions.shape[1], protocol)
    optimiser = torch.optim.Adam(model.parameters(), lr=protocol.lr)
    weights = targets.max(dim=1).values
    steps = max(1, int(np.ceil(len(x) / protocol.batch_size)))
    model.train()
    for _ in range(protocol.epochs):
        order = torch.multinomial(weights, steps * protocol.batch_size, replacement=True, generator=generator)
        for batch in order.view(steps, protocol.batch_size):
            optimiser.zero_grad()
            soft_cross_entropy(model(inputs[batch]), targets[batch]).backward()
            optimiser.step()
    return scaler, model.eval()


def predict_probabilities(scaler: StandardScaler, model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        logits = model(torch.as_tensor(scaler.transform(x), dtype=torch.float32))
    return torch.softmax(logits, dim=1).numpy()


def classify_morphology(
    features: dict[str, np.ndarray], labels: pd.DataFrame, target_ids: np.ndarray, protocol: MorphologyProtocol,
    seed: int = 0,
) -> pd.DataFrame:  # fmt: skip
    """Long table of test predictions: features, question, TARGETID, answer probabilities
    (``p_{answer}``), the most-voted answer (``true``) and the predicted one (``predicted``).

    ``features`` maps a feature-set name to (n, d) arrays row-aligned with ``labels`` and ``target_ids``.
    """
    train, test = protocol_rows(labels, protocol)
    frames = []
    for name, x in features.items():
        for question, answers in QUESTIONS.items():
            fit_rows = question_rows(labels, question, train, 0)
            test_rows = question_rows(labels, question, test, protocol.test_min_votes)
            if len(fit_rows) < 2 or len(test_rows) == 0:
                continue  # nothing to learn or to score: the metrics table says so
            columns = answer_columns(question, "_debiased")
            fractions = labels[columns].to_numpy()
            scaler, model = train_classifier(x[fit_rows], fractions[fit_rows], protocol, seed)
            probabilities = predict_probabilities(scaler, model, x[test_rows])
            frame = pd.DataFrame(probabilities, columns=[f"p_{a}" for a in answers])
            frame.insert(0, "features", name)
            frame.insert(1, "question", question)
            frame.insert(2, "TARGETID", target_ids[test_rows])
            frame["true"] = np.asarray(answers)[np.argmax(fractions[test_rows], axis=1)]
            frame["predicted"] = np.asarray(answers)[np.argmax(probabilities, axis=1)]
            frame["n_train"] = len(fit_rows)
            frames.append(frame)
    if not frames:
        raise ValueError(
            f"no question has training and test galaxies: {len(train)} train and {len(test)} test galaxies "
            f"matched the Galaxy Zoo catalogue with >= {protocol.min_total_votes} votes "
            "(config block 'morphology': match_radius_arcsec, test_min_votes)"
        )
    return pd.concat(frames, ignore_index=True)


def morphology_metrics(predictions: pd.DataFrame) -> pd.DataFrame:
    """Per feature set and question: n_train, n_test, accuracy, weighted F1 and the majority-answer rate."""
    rows = []
    for (name, question), group in predictions.groupby(["features", "question"], sort=False):
        answers = QUESTIONS[question]
        true = np.eye(len(answers))[[answers.index(a) for a in group["true"]]]
        probabilities = group[[f"p_{a}" for a in answers]].to_numpy()
        rows.append({
            "features": name, "question": question, "n_train": int(group["n_train"].iloc[0]), "n_test": len(group),
            "accuracy": accuracy(true, probabilities), "weighted_f1": weighted_f1(true, probabilities),
            "majority_rate": float(group["true"].value_counts(normalize=True).iloc[0]),
        })  # fmt: skip
    return pd.DataFrame(rows)


def match_counts(labels: pd.DataFrame, protocol: MorphologyProtocol) -> pd.DataFrame:
    """How many held-out galaxies each step of the protocol keeps (the morphology cut table)."""
    train, test = protocol_rows(labels, protocol)
    steps = [
        ("held-out galaxies", len(labels)),
        (f'matched within {protocol.match_radius_arcsec}" of a Galaxy Zoo galaxy', int(labels["matched"].sum())),
        (f"with >= {protocol.min_total_votes} votes on {FIRST_QUESTION}", len(train) + len(test)),
        (f"training (first {protocol.train_fraction:.0%})", len(train)),
        ("test (the rest)", len(test)),
    ]
    return pd.DataFrame(steps, columns=["step", "galaxies"])


def morphology_features(
    embeddings: dict[str, np.ndarray], backbone: dict[str, np.ndarray], moments: dict[str, np.ndarray]
) -> dict[str, np.ndarray]:
    """The feature sets compared, row-aligned with the held-out embedding files: the v2 table's
    three, and the cutouts' adaptive moments with the magnitudes (``adaptive_moments``), which
    show how much of each question a classical shape measurement answers."""
    for name, other in (("backbone features", backbone), ("adaptive moments", moments)):
        if not np.array_equal(embeddings["TARGETID"], other["TARGETID"]):
            raise ValueError(f"the embedding files and the {name} hold different galaxies or orders")
    magnitudes = np.stack([embeddings[m] for m in ("MAG_G", "MAG_R", "MAG_Z")], axis=1)
    return {
        "AstroCLIP image embedding": embeddings["image_embedding"],
        "image backbone before alignment": backbone["image"],
        "photometry (g, r, z magnitudes)": magnitudes,
        MOMENTS_FEATURES: np.concatenate([moments["moments"], magnitudes], axis=1),
    }


def write_morphology(
    embedding_paths, backbone_path, dataset_paths, catalogue_path, predictions_out, metrics_out, counts_out,
    protocol: MorphologyProtocol, seed: int,
) -> None:  # fmt: skip
    """Cross-match, classify and score: the predictions (parquet), metrics and counts (CSV).
    ``dataset_paths`` are the dataset files the embedding files were made from, in their order."""
    embeddings = read_embedding_files(embedding_paths)
    with open_hdf5(backbone_path, "r") as h5:
        backbone = {name: h5[name][()] for name in h5}
    moments = dataset_moments(dataset_paths)
    catalogue = read_volunteer_catalogue(catalogue_path)
    labels = match_labels(embeddings["RA"], embeddings["DEC"], catalogue, protocol.match_radius_arcsec)
    predictions = classify_morphology(
        morphology_features(embeddings, backbone, moments), labels, embeddings["TARGETID"], protocol, seed
    )
    with atomic_path(predictions_out) as tmp:
        predictions.to_parquet(tmp, index=False)
    with atomic_path(metrics_out) as tmp:
        morphology_metrics(predictions).to_csv(tmp, index=False, float_format="%.3f")
    with atomic_path(counts_out) as tmp:
        match_counts(labels, protocol).to_csv(tmp, index=False)
