#!/usr/bin/env bash
# The paper presets' training steps on one CUDA GPU, in bf16, each with its host-sync count: the
# commands whose results BENCHMARKS.md reports for a GPU. Runs with the machine's own python3 and
# packages (torch, lightning, h5py, pandas), from the repository root:
#     bash benchmarks/gpu_checks.sh [log directory]
# Each benchmark has its own time limit, so one that hangs or fails leaves the others' numbers.
set -u
log_dir=${1:-.}
export PYTHONPATH=$PWD/src:$PWD/benchmarks PYTHONUNBUFFERED=1
run() {  # seconds, name, command...
    local limit=$1 name=$2
    shift 2
    echo "== $name"
    timeout "$limit" "$@" 2>&1 | tee "$log_dir/$name.log" | grep -v "^\s*$" | tail -n "${TAIL:-12}"
}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"
paper_dino=(--preset paper --size 152 --crop 144 --local-crop 60 --local-crops 8 --prototypes 65536
    --head-hidden 2048 --bottleneck 256 --peak-tflops 989 --steps 10)
run 120 dino_paper_b72 python3 benchmarks/dino_training.py "${paper_dino[@]}" --batch 72
run 90 specformer_paper_b64 python3 benchmarks/specformer_training.py --preset paper --pixels 7781 --batch 64
run 60 moco_paper_b256 python3 benchmarks/moco_training.py --preset paper --size 152 --crop 96 --batch 256 --channels-last
run 90 alignment_paper_b512 python3 benchmarks/alignment_training.py --preset paper --pixels 7781 --size 152 --crop 96 --batch 512
run 90 dino_paper_b144 python3 benchmarks/dino_training.py "${paper_dino[@]}" --batch 144
run 150 dino_paper_b72_compiled python3 benchmarks/dino_training.py "${paper_dino[@]}" --batch 72 --compile
