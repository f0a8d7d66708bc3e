#!/usr/bin/env bash
# The GPU check (docs/gpu_check.md): on one CUDA GPU, in at most 9 minutes, (1) the speed
# harness, scripts/benchmark.py: ResNet-20 and ResNet-56 in fp32, bf16-mixed and compiled,
# ResNet-50 on synthetic 224px images, and ImageNet's decode paths (PIL, data.decode=cpu,
# data.decode=gpu) on generated 500x375 JPEGs against ResNet-50 bf16; (2) the Table-6 grid, plain and residual x 20/32/44/56,
# all 8 runs at once on the GPU (hydra/launcher=local_gpus), for as many iterations of the
# paper's schedule (lr / 10 at 50% and 75%) as a timed probe says fit in the time left;
# (3) reslab-report on the grid. Every step has a time limit; a step that fails or runs out of
# time is recorded and the check goes on. Everything goes under one dir, printed at the end.
#   bash scripts/gpu_check.sh /data/cifar              # or: DATA_DIR=/data/cifar make gpu-check
#   bash scripts/gpu_check.sh --unofficial-data DIR    # files not the official ones: no md5 check
#   bash scripts/gpu_check.sh --dry-run                # the same on the CPU, tiny generated data
# Environment: PY (python to use), GPU_CHECK_DRY_RUN=1, GPU_CHECK_SECONDS (whole check, 520),
# GPU_CHECK_BENCH_SECONDS (speed harness, 240), GPU_CHECK_PROBE_SECONDS (timed probe, 30),
# GPU_CHECK_JOBS (grid runs at once on the GPU, 8).
set -euo pipefail

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
fail() {
    echo "gpu_check: error: $*" >&2
    exit 2
}

PY=${PY:-python}
dry=${GPU_CHECK_DRY_RUN:-0}
data=${DATA_DIR:-}
verify=true
out=""
while (($#)); do
    case $1 in
        --dry-run) dry=1 ;;
        --unofficial-data) verify=false ;;
        --out) out=${2:?--out needs a dir}; shift ;;
        -h | --help) usage; exit 0 ;;
        -*) fail "unknown option $1 (see --help)" ;;
        *) data=$1 ;;
    esac
    shift
done

start=$(date +%s)
[[ -z $data ]] || data=$(realpath -m "$data")
[[ $PY != */* ]] || PY=$(realpath -s "$PY")
"$PY" -c "import reslab, torch" 2>/dev/null ||
    fail "$PY cannot import reslab and torch; set PY to the python of reslab's env"
if [[ $dry != 1 ]]; then
    [[ -n $data ]] || fail "no CIFAR dir: give it as an argument or DATA_DIR (or use --dry-run)"
    [[ -d $data/cifar-10-batches-py ]] || fail "$data holds no cifar-10-batches-py/ (CIFAR-10)"
    "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())" ||
        fail "no CUDA GPU here; run the same steps on the CPU with --dry-run"
fi

out=${out:-logs/gpu_check/$(date +%Y-%m-%d_%H-%M-%S)$([[ $dry == 1 ]] && echo _dry_run)}
mkdir -p "$out/logs" || fail "cannot create $out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."

if [[ $dry == 1 ]]; then
    # Same steps, sized for a CPU: tiny generated data, a few steps, no compilation (minutes
    # per network on a CPU), one fake GPU shared by 2 runs at a time, one thread per process
    # (several processes, each with threads of their own, on a few cores wait on each other).
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    total=${GPU_CHECK_SECONDS:-1800} bench_total=${GPU_CHECK_BENCH_SECONDS:-1200}
    probe_s=${GPU_CHECK_PROBE_SECONDS:-5} jobs=${GPU_CHECK_JOBS:-2}
    max_steps=12 min_left=1 report_reserve=60
    bench_common=(--device cpu --batch-size 16 --steps 2 --warmup 1 --rounds 1 --tv-size 64
        --tv-batch 2 --overhead-steps 10)
    grid_extra=("hydra.launcher.gpus=[0]" data.batch_size=50 trainer.log_every_n_steps=2
        callbacks.gradient_diagnostics.every_n_steps=2)
    data=$out/data
    verify=false
    "$PY" - "$data" <<'EOF'
import pickle, sys
from pathlib import Path

import numpy as np

folder = Path(sys.argv[1]) / "cifar-10-batches-py"
folder.mkdir(parents=True, exist_ok=True)
rng = np.random.default_rng(0)
for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
    batch = {"data": rng.integers(0, 256, (100, 3072), dtype=np.uint8),
             "labels": rng.integers(0, 10, 100).tolist()}
    (folder / name).write_bytes(pickle.dumps(batch))
(folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [str(i) for i in range(10)]}))
EOF
    machine="CPU (dry run): $(nproc --all) cores"
    jpegs=24 imagefolder_flags=(--input-batches 2)
else
    total=${GPU_CHECK_SECONDS:-520} bench_total=${GPU_CHECK_BENCH_SECONDS:-240}
    probe_s=${GPU_CHECK_PROBE_SECONDS:-30} jobs=${GPU_CHECK_JOBS:-8}
    max_steps=64000 min_left=30 report_reserve=30
    bench_common=(--device cuda --rounds 2 --steps 30 --warmup 5 --overhead-steps 100)
    grid_extra=()
    jpegs=1000 imagefolder_flags=(--batch-size 128 --input-batches 6)
    machine=$(nvidia-smi -L 2>/dev/null || "$PY" -c "import torch; print(torch.cuda.get_device_name())")
fi
# ImageNet-size JPEGs (500x375, quality 90: ImageNet's typical size) for the decode paths,
# 2 classes of $jpegs training images: smooth random colour fields with noise.
imagefolder=$out/imagefolder
"$PY" - "$imagefolder" "$jpegs" <<'EOF'
import sys
from pathlib import Path

import numpy as np
from PIL import Image

root, n = Path(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
for split, count in (("train", n), ("val", 2)):
    for c in range(2):
        folder = root / split / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            field = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
            pixels = np.asarray(field.resize((500, 375), Image.BICUBIC), dtype=np.float64)
            pixels = np.clip(pixels + rng.normal(0, 8, pixels.shape), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i:05d}.JPEG", quality=90)
EOF
deadline=$((start + total))
bench_deadline=$((start + bench_total))
left() { echo $(($1 - $(date +%s))); }

child=""
trap '[[ -z $child ]] || kill -TERM -- "-$child" 2>/dev/null; exit 130' INT TERM
steps_md=$out/logs/steps.md
printf '| step | outcome | seconds | output |\n| --- | --- | ---: | --- |\n' >"$steps_md"
# run NAME LIMIT CMD...: CMD under a time limit, its output in logs/NAME.txt, its outcome in
# logs/steps.md; never fails the check.
run() {
    local name=$1 limit=$2 t0 rc=0 outcome
    shift 2
    if ((limit < min_left)); then
        echo "| $name | skipped: ${limit}s left of its time | 0 | |" >>"$steps_md"
        echo "gpu_check: $name skipped (${limit}s left)"
        return 0
    fi
    echo "gpu_check: $name (at most ${limit}s)"
    t0=$(date +%s)
    # In the background, so that a stop of the check (Ctrl-C, a kill) stops it too: timeout
    # leads its own process group, which no terminal signal reaches.
    timeout -k 10 "$limit" "$@" >"$out/logs/$name.txt" 2>&1 &
    child=$!
    wait "$child" || rc=$?
    child=""
    case $rc in
        0) outcome=ok ;;
        124 | 137) outcome="ran out of its ${limit}s" ;;
        *) outcome="failed (exit $rc)" ;;
    esac
    echo "| $name | $outcome | $(($(date +%s) - t0)) | logs/$name.txt |" >>"$steps_md"
}

# 1. The speed harness, most wanted first; each run gets what is left of the harness's time.
bench=(
    "resnet20_fp32|--model resnet20 --precision 32-true"
    "resnet20_bf16|--model resnet20 --precision bf16-mixed"
    "resnet56_fp32|--model resnet56 --precision 32-true"
    "resnet56_bf16|--model resnet56 --precision bf16-mixed"
    "resnet50_224px_bf16|--model resnet50 --data synthetic --image-size 224 --precision bf16-mixed --channels-last"
    "imagefolder_decode_resnet50_bf16|--model resnet50 --data imagefolder --data-dir $imagefolder --precision bf16-mixed --channels-last ${imagefolder_flags[*]}"
    "resnet20_bf16_compile|--model resnet20 --precision bf16-mixed --compile --training-only --rounds 1"
    "resnet56_bf16_compile|--model resnet56 --precision bf16-mixed --compile --training-only --rounds 1"
)
for entry in "${bench[@]}"; do
    name=bench_${entry%%|*}
    read -ra flags <<<"${entry#*|}"
    if [[ $dry == 1 ]]; then
        # The first run has every section; the others check their options, training rows only.
        kept=()
        [[ $entry == "${bench[0]}" || $entry == *--training-only* ]] || kept=(--training-only)
        for flag in "${flags[@]}"; do
            [[ $flag == --compile ]] || kept+=("${flag/224/64}")
        done
        flags=("${kept[@]}")
    fi
    run "$name" "$(left "$bench_deadline")" \
        "$PY" scripts/benchmark.py "${bench_common[@]}" --data-dir "$data" ${flags[@]+"${flags[@]}"}
done

# 2. The grid: a timed probe of the same 8 runs at once, then as many steps as fit.
grid=(experiment=cifar10_degradation hydra/launcher=local_gpus "hydra.launcher.jobs_per_gpu=$jobs"
    "data.root=$data" data.download=false "data.verify_md5=$verify" "~callbacks.progress_bar"
    ${grid_extra[@]+"${grid_extra[@]}"})
t0=$(date +%s)
run grid_probe "$(($(left "$deadline") - report_reserve))" "$PY" -m reslab.commands.train -m "${grid[@]}" \
    "+trainer.max_time=$(printf '00:00:%02d:%02d' $((probe_s / 60)) $((probe_s % 60)))" test=false \
    "hydra.sweep.dir=$out/probe"
probe_wall=$(($(date +%s) - t0))
# Steps that fit: (time left - the probe's start-up) x 0.85 / the slowest run's time per step,
# from the probe's runs (each trained for probe_s seconds, validation included).
budget=$("$PY" - "$out/probe" "$probe_wall" "$(($(left "$deadline") - report_reserve))" "$max_steps" <<'EOF'
import json, sys
from pathlib import Path

probe, wall, left, cap = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
runs = [json.loads(p.read_text()) for p in sorted(probe.glob("*/summary.json"))]
runs = [r for r in runs if r.get("status") == "completed" and r.get("steps")]
if len(runs) < 8:
    print(0, f"the probe completed {len(runs)} of 8 runs")
    sys.exit()
per_step = max(r["wall_time_s"] / r["steps"] for r in runs)
start_up = max(wall - max(r["wall_time_s"] for r in runs), 0)
steps = min(int((left - start_up) * 0.85 / per_step), cap)
print(steps, f"slowest run {per_step * 1000:.1f} ms per step, start-up {start_up:.0f} s, "
      f"{left:.0f} s left")
EOF
) || budget="0 the probe's records could not be read"
steps=${budget%% *}
echo "gpu_check: grid budget: $steps steps (${budget#* })"
if ((steps >= 4)); then
    run grid "$(($(left "$deadline") - report_reserve))" "$PY" -m reslab.commands.train -m "${grid[@]}" \
        "trainer.max_steps=$steps" "scheduler.scheduler.milestones=[$((steps / 2)),$((steps * 3 / 4))]" \
        "hydra.sweep.dir=$out/grid"
    # 3. The report of the grid, whatever the grid's outcome (a few seconds).
    report_left=$(left "$deadline")
    run report "$((report_left > 15 ? report_left : 15))" \
        "$PY" -m reslab.commands.report "$out/grid" --out "$out/report"
else
    echo "| grid | skipped: under 4 steps fit | 0 | |" >>"$steps_md"
fi

# One file to read: what ran, the tables, the report.
{
    echo "# GPU check, $(date '+%Y-%m-%d %H:%M %Z')"
    echo
    echo "Machine: $machine. Commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)."
    echo "Data: $data (md5 check: $verify). Grid: $steps steps (${budget#* }), lr / 10 at"
    echo "steps $((steps / 2)) and $((steps * 3 / 4)), $jobs runs at once. Took $(($(date +%s) - start)) s."
    echo
    cat "$steps_md"
    for entry in "${bench[@]}"; do
        name=bench_${entry%%|*}
        [[ -f $out/logs/$name.txt ]] || continue
        echo
        echo "## $name"
        echo
        grep -E '^(\| |[a-z0-9_]+, batch |Framework time|Host-device syncs)' "$out/logs/$name.txt" ||
            echo "(no table: logs/$name.txt)"
    done
    if [[ -f $out/report/table.md ]]; then
        echo
        echo "## Table 6 grid (reslab-report, $out/report)"
        echo
        cat "$out/report/table.md"
    fi
} >"$out/summary.md"
tar czf "$out/../$(basename "$out").tar.gz" --exclude='*.ckpt' --exclude="$(basename "$out")/data" \
    --exclude="$(basename "$out")/imagefolder" \
    -C "$out/.." "$(basename "$out")"
mv "$out/../$(basename "$out").tar.gz" "$out/gpu_check.tar.gz"
echo "gpu_check: done in $(($(date +%s) - start)) s; results in $out (summary.md, gpu_check.tar.gz)"
