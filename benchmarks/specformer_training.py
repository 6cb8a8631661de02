"""Spectrum-transformer training throughput (spectra/s) and peak memory, on random spectra.

Times optimizer steps (forward, masked-MSE backward, AdamW) of a preset at a given grid length,
after a few warm-up steps; on CUDA in bf16 autocast, and then also reports model FLOP utilisation
against a measured bf16 matmul rate. Usage:

    python benchmarks/specformer_training.py --preset laptop --pixels 1945 --batch 64
    python benchmarks/specformer_training.py --preset paper --pixels 7781 --batch 64   # GPU
"""

import argparse
import time

import torch
from timing import host_syncs, peak_memory, time_steps

from astroclip_pipeline.models.masked_segments import chunk_mask, hide, masked_mse
from astroclip_pipeline.models.specformer import SpecFormer, SpecFormerConfig, count_parameters, n_tokens, tokenize
from astroclip_pipeline.train.loop import to_device


def training_flops_per_spectrum(config: SpecFormerConfig, n_params: int, length: int) -> float:
    """6 N T for the weights plus the attention matmuls (QK^T and AV: 2 x 2 T^2 d forward, x3 with backward)."""
    return 6.0 * n_params * length + 3 * 4.0 * config.n_layers * length**2 * config.embed_dim


def bf16_matmul_rate(device: torch.device, n: int = 8192, repeats: int = 20) -> float:
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    torch.cuda.synchronize()
    return 2.0 * n**3 * repeats / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="laptop")
    parser.add_argument("--pixels", type=int, default=1945)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = SpecFormerConfig.preset(args.preset)
    model = SpecFormer(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    flux = torch.randn(args.batch, args.pixels, device=device) + 3.0
    ivar = torch.ones_like(flux)
    length = n_tokens(args.pixels)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step():
        tokens, valid = tokenize(flux, ivar)
        mask = to_device(chunk_mask(args.batch, length, 6, args.chunk), device)
        with autocast:
            _, prediction = model(hide(tokens, mask))
        loss = masked_mse(prediction.float(), tokens, mask, valid)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    elapsed = time_steps(step, args.steps, device)
    rate = args.batch * args.steps / elapsed
    n_params = count_parameters(model)
    print(f"{args.preset} preset, {n_params / 1e6:.2f}M parameters, {length} tokens, batch {args.batch}, {device}")
    print(f"  {rate:.1f} spectra/s ({elapsed / args.steps * 1e3:.0f} ms per step)")
    print(f"  {peak_memory(device)}")
    host_syncs(step, device)
    if device.type == "cuda":
        achieved = rate * training_flops_per_spectrum(config, n_params, length)
        peak = bf16_matmul_rate(device)
        print(f"  model FLOP utilisation {achieved / peak:.1%} ({achieved / 1e12:.1f} of {peak / 1e12:.0f} TFLOP/s)")


if __name__ == "__main__":
    main()
