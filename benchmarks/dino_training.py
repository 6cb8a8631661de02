"""ViT pretraining throughput with DINOv2 (cutouts/s, and on a GPU the model FLOP utilisation).

Times optimizer steps as ``pretrain_dino`` runs them: two global and ``--local-crops`` local views
per cutout (random crop and flips, reddening, blur, noise, viewer RGB), iBOT block masks, the
teacher's forward, the student's forward and backward over every view, the centre updates, AdamW
and the teacher's EMA. Cutouts are rendered by the mock survey (``--mock N`` galaxies) or, for the
paper's 152-pixel size, random. On CUDA the networks run in bf16 autocast, as in training.

MFU counts the ViTs' matrix products only (``models/vit.py: flops_per_image``): per image, the
student's forward and backward (3x forward) over 2 global and n local crops with their share of
masked tokens unchanged, its blocks on the rows its drop path keeps (above a rate of 0.1 it skips
whole rows), and the teacher's forward over the 2 global crops; the head is left out.
Usage:

    python benchmarks/dino_training.py --preset laptop --crop 48 --batch 64 --mock 256
    python benchmarks/dino_training.py --preset paper --size 152 --crop 144 --local-crop 60 \
        --local-crops 8 --batch 72 --prototypes 65536 --head-hidden 2048 --bottleneck 256 --peak-tflops 989  # GPU
"""

import argparse
import tempfile
from dataclasses import asdict
from pathlib import Path

import h5py
import torch
from timing import host_syncs, peak_memory, time_steps

from astroclip_pipeline.models.transformer import SUBSET_DROP_PATH_ABOVE
from astroclip_pipeline.models.vit import ViTConfig, count_parameters, flops_per_image
from astroclip_pipeline.train.dino import DinoPretraining, parameter_groups


def mock_cutouts(n: int, size: int) -> torch.Tensor:
    """``n`` cutouts of the mock survey, rendered in a temporary directory (nanomaggies)."""
    # imported here: the mock survey needs astropy, speclite and kcorrect, which a GPU machine
    # running only the random-cutout benchmark may not have
    from astroclip_pipeline.sources.mock.survey import MockSurveySpec, write_cutouts, write_targets

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        spec = MockSurveySpec(seed=1, n_galaxies=n, galaxies_per_shard=n, rebin=8, image_size=size)
        write_targets(spec, root / "targets.parquet", root / "galaxies.parquet")
        write_cutouts(spec, root / "galaxies.parquet", 0, root / "cutouts.h5", root / "missing.csv")
        with h5py.File(root / "cutouts.h5") as h5:
            return torch.from_numpy(h5["image"][()])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="laptop")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--crop", type=int, default=48)
    parser.add_argument("--local-crop", type=int, default=24)
    parser.add_argument("--local-crops", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--prototypes", type=int, default=1024)
    parser.add_argument("--head-hidden", type=int, default=256)
    parser.add_argument("--bottleneck", type=int, default=64)
    parser.add_argument("--mock", type=int, default=0, help="render this many mock cutouts (0: random ones)")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--peak-tflops", type=float, default=0.0, help="the device's dense bf16 peak, for MFU")
    parser.add_argument("--compile", action="store_true", help="torch.compile each block of both ViTs")
    parser.add_argument("--profile", action="store_true", help="print the GPU time of the costliest operators")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = ViTConfig.preset(args.preset, image_size=args.crop)
    settings = {
        "batch_size": args.batch, "local_crop": args.local_crop, "local_crops": args.local_crops,
        "n_prototypes": args.prototypes, "head_hidden_dim": args.head_hidden, "head_bottleneck_dim": args.bottleneck,
    }  # fmt: skip
    module = DinoPretraining(asdict(config), settings).to(device)
    if args.compile:
        # block by block: the losses call the ViTs' forward_tokens, past the modules' own __call__
        for block in [*module.student.blocks, *module.teacher.blocks]:
            block.compile()
    optimizer = torch.optim.AdamW(parameter_groups(module.student, module.head, module.settings), lr=1e-4)
    if args.mock:
        pool = mock_cutouts(args.mock, args.size)
    else:
        pool = 0.05 * torch.rand(args.batch * 4, 3, args.size, args.size)
    pool = pool.to(device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    state = {"i": 0}

    def step():
        start = (state["i"] * args.batch) % (len(pool) - args.batch + 1)
        state["i"] += 1
        with autocast:
            # no trainer here, so one process's centres and a fixed teacher temperature
            parts = module.losses(pool[start : start + args.batch], None, update_centers=True, temperature=0.04)
        optimizer.zero_grad(set_to_none=True)
        parts["loss"].backward()
        module.configure_gradient_clipping(optimizer)
        optimizer.step()
        module.update_teacher(0.996)

    elapsed = time_steps(step, args.steps, device)
    images_per_s = args.batch * args.steps / elapsed
    # the student's blocks compute only the rows its drop path keeps, when it skips whole rows
    kept = 1.0 - config.drop_path if config.drop_path > SUBSET_DROP_PATH_ABOVE else 1.0
    student = 2 * flops_per_image(config, None, kept)
    student += args.local_crops * flops_per_image(config, args.local_crop, kept)
    flops = 3 * student + 2 * flops_per_image(config)  # and the teacher's forward of the global crops
    print(
        f"{args.preset} ViT, {count_parameters(config) / 1e6:.2f}M parameters, {args.crop}-px global and "
        f"{args.local_crops} x {args.local_crop}-px local crops, batch {args.batch}, {device}, "
        f"{'mock' if args.mock else 'random'} cutouts of {args.size} px"
    )
    print(f"  {images_per_s:.1f} cutouts/s ({elapsed / args.steps * 1e3:.0f} ms per step)")
    print(f"  {images_per_s * flops / 1e12:.3f} TFLOP/s in the ViTs' matrix products")
    if args.peak_tflops:
        print(f"  MFU {images_per_s * flops / (args.peak_tflops * 1e12):.1%} of {args.peak_tflops} TFLOP/s")
    print(f"  {peak_memory(device)}")
    host_syncs(step, device)
    if args.profile and device.type == "cuda":
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
            for _ in range(2):
                step()
            torch.cuda.synchronize()
        print(profile.key_averages().table(sort_by="cuda_time_total", row_limit=15, max_name_column_width=50))


if __name__ == "__main__":
    main()
