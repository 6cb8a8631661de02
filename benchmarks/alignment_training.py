"""Alignment training throughput (pairs/s), with and without the frozen-feature caches.

Times optimizer steps of the alignment heads (random frozen backbones of a preset, random
cutouts and spectra) in three modes: both caches on (a step only runs the heads), image features
cached but the spectrum transformer run every step (what the paper scale does), and nothing cached
(both backbones every step). On CUDA the steps run in bf16 autocast. Usage:

    python benchmarks/alignment_training.py --preset laptop --pixels 1945 --size 64 --crop 48 --batch 512
    python benchmarks/alignment_training.py --preset paper --pixels 7781 --size 152 --crop 96 --batch 512  # GPU
"""

import argparse

import torch
from timing import host_syncs, peak_memory, time_steps

from astroclip_pipeline.models.astroclip import AstroCLIP
from astroclip_pipeline.models.image_encoder import ImageEncoder
from astroclip_pipeline.models.resnet import ResNetConfig
from astroclip_pipeline.models.specformer import SpecFormer, SpecFormerConfig, n_tokens
from astroclip_pipeline.train.alignment import AlignmentModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="laptop")
    parser.add_argument("--pixels", type=int, default=1945)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--crop", type=int, default=48)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = ResNetConfig.preset(args.preset)
    image_encoder = ImageEncoder(config, args.crop, (config.feature_dim, 128))
    model = AstroCLIP(image_encoder, SpecFormer(SpecFormerConfig.preset(args.preset)))
    module = AlignmentModule(model, {"batch_size": args.batch}).to(device).train()
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    b, tokens, width = args.batch, n_tokens(args.pixels), model.spectrum_encoder.config.embed_dim
    raw = {
        "image": 0.05 * torch.rand(b, 3, args.size, args.size, device=device),
        "spectrum": torch.rand(b, args.pixels, device=device) + 1.0,
        "ivar": torch.ones(b, args.pixels, device=device),
    }
    cached = {
        "image_features": torch.rand(b, 8, config.feature_dim, device=device),
        "hidden": torch.randn(b, tokens, width, device=device),
    }
    modes = {
        "both cached": cached,
        "images cached, transformer every step": {"image_features": cached["image_features"], **raw},
        "nothing cached": raw,
    }
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    print(f"{args.preset} preset, batch {b}, {tokens} tokens, {args.crop}-px crop, {device}")
    for name, batch in modes.items():

        def step(batch=batch):
            with autocast:
                loss, _ = module._loss(batch, training=True)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        elapsed = time_steps(step, args.steps, device, warmup=1)
        print(f"  {name}: {b * args.steps / elapsed:.0f} pairs/s ({elapsed / args.steps * 1e3:.0f} ms per step)")
        host_syncs(step, device)
    print(f"  {peak_memory(device)}")


if __name__ == "__main__":
    main()
