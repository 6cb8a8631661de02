"""Image-encoder pretraining throughput (cutouts/s) and peak memory, on random cutouts.

Times MoCo v2 optimizer steps as ``pretrain_images`` runs them: two augmented views per cutout
(reddening, blur, rotation/flip/scale/shift into the crop, noise, Stein scaling), the query encoder
forward and backward, the key encoder forward, the momentum update and the queue. On CUDA the
encoders run in bf16 autocast, optionally channels-last. Usage:

    python benchmarks/moco_training.py --preset laptop --size 64 --crop 48 --batch 64
    python benchmarks/moco_training.py --preset paper --size 152 --crop 96 --batch 256 --channels-last  # GPU
"""

import argparse

import torch
from timing import host_syncs, peak_memory, time_steps

from astroclip_pipeline.models.resnet import ResNetConfig
from astroclip_pipeline.train.image_pretraining import MoCoPretraining


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="laptop")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--crop", type=int, default=48)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--channels-last", action="store_true")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = ResNetConfig.preset(args.preset)
    settings = {"queue_size": 4096, "batch_size": args.batch}
    module = MoCoPretraining(vars(config) | {"layers": list(config.layers)}, args.crop, settings).to(device)
    if args.channels_last:
        module = module.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(module.encoder_q.parameters(), lr=0.01, momentum=0.9)
    images = 0.05 * torch.rand(args.batch, 3, args.size, args.size, device=device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step():
        module._update_key_encoder()
        with autocast:
            loss, _, key = module._loss(images)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        module._enqueue(key)

    elapsed = time_steps(step, args.steps, device)
    n_params = sum(p.numel() for p in module.encoder_q.parameters())
    print(f"{args.preset} preset, {n_params / 1e6:.2f}M parameters, {args.crop}-px crop, batch {args.batch}, {device}")
    print(f"  {args.batch * args.steps / elapsed:.1f} cutouts/s ({elapsed / args.steps * 1e3:.0f} ms per step)")
    print(f"  {peak_memory(device)}")
    host_syncs(step, device)


if __name__ == "__main__":
    main()
