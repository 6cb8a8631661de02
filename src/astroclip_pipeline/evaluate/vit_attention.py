"""What the ViT looks at: the CLS token's self-attention in the last block, per head (DINO's Fig. 1).

For a few cutouts of a split, the Legacy Survey viewer's RGB of the crop the ViT sees beside one
map per attention head: how much of the CLS token's attention (softmax weights of the last block)
each patch receives. A ViT pretrained by DINO on galaxies should attend to the galaxy, different
heads to different parts of it or to its neighbours, where a random one attends almost uniformly.
"""

from pathlib import Path

import h5py
import numpy as np
import torch

from ..data.augmentations import center_crop
from ..models.image_encoder import ViTImageEncoder, load_image_encoder
from .figures import plt, save_figure
from .rgb import legacysurvey_rgb


def cls_attention_maps(encoder: ViTImageEncoder, images: np.ndarray) -> np.ndarray:
    """(n, 3, H, W) cutouts in nanomaggies -> (n, heads, grid, grid) CLS attention of the last block."""
    with torch.no_grad():
        return encoder.backbone.last_attention(encoder.preprocess(torch.as_tensor(images, dtype=torch.float32))).numpy()


def plot_vit_attention(encoder_path: str | Path, dataset_path: str | Path, output_path: str | Path, n: int, seed: int):
    """RGB of ``n`` random cutouts of ``dataset_path`` (the centre crop the ViT sees) and the last
    block's CLS attention of each head, upsampled to the crop with nearest-neighbour blocks."""
    encoder = load_image_encoder(encoder_path)
    if encoder.architecture != "vit":
        raise ValueError(f"{encoder_path}: a {encoder.architecture} image encoder; attention maps need a ViT")
    with h5py.File(dataset_path, "r") as h5:
        n_rows = len(h5["TARGETID"])
        rows = np.sort(np.random.default_rng(seed).choice(n_rows, size=min(n, n_rows), replace=False))
        images = h5["image"][rows]
        z, log_mass = h5["Z_HP"][rows], h5["LOGMSTAR"][rows]
    maps = cls_attention_maps(encoder, images)
    crops = center_crop(torch.from_numpy(images), encoder.crop).numpy()
    n_heads = maps.shape[1]
    fig, axes = plt.subplots(len(rows), 1 + n_heads, figsize=(1.5 * (1 + n_heads), 1.55 * len(rows)), squeeze=False)
    for i, row in enumerate(axes):
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].imshow(legacysurvey_rgb(crops[i]), origin="lower")
        row[0].set_ylabel(f"z={z[i]:.2f}\nlogM={log_mass[i]:.1f}", fontsize=7)
        for head in range(n_heads):
            # each map on its own scale: where a head looks, not how peaked it is
            row[1 + head].imshow(maps[i, head], origin="lower", cmap="inferno", extent=(0, encoder.crop) * 2)
            if i == 0:
                row[1 + head].set_title(f"head {head + 1}", fontsize=8)
    axes[0, 0].set_title("RGB (ViT crop)", fontsize=8)
    fig.suptitle("CLS self-attention of the last block", fontsize=9)
    fig.tight_layout()
    save_figure(fig, output_path)
