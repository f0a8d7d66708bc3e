"""`scripts/benchmark.py` runs as the README shows (its `__main__`, in this process) and
prints a complete table (no speed assertions: the figures are the benchmark's job, not the
tests')."""

from __future__ import annotations

import re
import runpy
import shutil
import tempfile
from pathlib import Path

import pytest
from helpers.processes import Outcome, run_main
from torchvision.transforms import v2

from reslab.data.transforms import RandomShorterSideCrop
from reslab.models import cifar_resnet, imagenet_resnet
from reslab.models.flops import count_macs

SCRIPT = Path(__file__).parents[1] / "scripts" / "benchmark.py"
TINY = ["--steps", "2", "--warmup", "1", "--rounds", "1", "--tv-size", "64", "--tv-batch", "2",
        "--overhead-steps", "10"]  # fmt: skip


def script(*args: str) -> Outcome:
    """`python scripts/benchmark.py ARGS`, which leaves no scratch dir behind."""
    scratch, tempdir = Path(tempfile.mkdtemp()), tempfile.tempdir
    tempfile.tempdir = str(scratch)
    try:
        run = run_main(lambda: runpy.run_path(str(SCRIPT), run_name="__main__"), [SCRIPT, *args])
    finally:
        tempfile.tempdir = tempdir
    assert not list(scratch.glob("reslab-bench-*"))
    shutil.rmtree(scratch)
    return run


def bench(*args: str) -> tuple[str, dict[str, list[str]]]:
    run = script(*TINY, *args)
    assert run.code == 0, run.err[-3000:]
    rows = {}
    for line in run.out.splitlines():
        if line.startswith("| ") and not line.startswith("| measurement"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = cells[1:]
    return run.out, rows


def gflop(stdout: str) -> float:
    return float(re.search(r"([\d.]+) GFLOP per image per training step", stdout).group(1))


def check_training_rows(rows: dict[str, list[str]], names: list[str]) -> None:
    for name in names:
        (row,) = [cells for key, cells in rows.items() if key.startswith(name)]
        rate, spread, ratio, _, tflops, mfu = row
        low, high = (float(x.replace(",", "")) for x in spread.split("-"))
        assert 0 < low <= float(rate.replace(",", "")) <= high and float(ratio) > 0
        assert float(tflops) > 0 and 0 < float(mfu.rstrip("%")) < 100


@pytest.mark.slow
def test_cifar_table(cifar10_root: Path) -> None:
    stdout, rows = bench(
        "--batch-size", "32", "--data-dir", str(cifar10_root), "--peak-tflops", "1"
    )  # fmt: skip
    check_training_rows(
        rows,
        [
            "bare PyTorch loop",
            "reslab-train pipeline, `data=cifar10`",
            "reslab-train pipeline, `data.pipeline=workers`",
            "model alone",
        ],
    )
    assert {"input: device loader alone", "input: DataLoader (`data.num_workers`) alone"} <= set(
        rows
    )
    assert rows["torchvision resnet18 fwd+bwd"][2] == "1.000"
    assert f"CIFAR-10 from {cifar10_root}" in stdout
    # Training FLOPs: forward (2 per MAC) plus backward (about twice that; the first conv
    # needs no input gradient).
    forward = 2 * count_macs(cifar_resnet(20))["total"] / 1e9
    assert 2.8 * forward < gflop(stdout) <= 3.0 * forward
    assert "peak 1.00 TFLOP/s (--peak-tflops)" in stdout
    *_, tflops, mfu = rows["bare PyTorch loop, device-resident data"]
    assert abs(float(mfu.rstrip("%")) - 100 * float(tflops)) < 0.2
    bare, full = re.search(
        r"bare loop ([\d.]+) ms, reslab-train pipeline ([\d.]+) ms", stdout
    ).groups()
    assert float(bare) > 0 and float(full) > 0
    assert re.search(r"expected pipeline/bare (0|1)\.\d{3}", stdout)
    # One logging period: the bare loop never syncs; reslab-train's syncs come from the
    # logging step and the progress bar only (tests/test_syncs.py pins down the rest).
    syncs = re.search(
        r"over 50 steps \(one logging period\): bare loop 0; reslab-train (\d+):", stdout
    )
    assert syncs and 0 < int(syncs.group(1)) < 50


@pytest.mark.slow
def test_synthetic_imagenet_size(tmp_path: Path) -> None:
    stdout, rows = bench("--model", "resnet18", "--data", "synthetic", "--image-size", "64",
                         "--batch-size", "4")  # fmt: skip
    check_training_rows(rows, ["bare PyTorch loop", "reslab-train pipeline, module + Trainer"])
    assert not any("workers" in name for name in rows)
    assert "measured 2048x2048 float32 matmul" in stdout
    forward = 2 * count_macs(imagenet_resnet(18), (3, 64, 64))["total"] / 1e9
    assert 2.8 * forward < gflop(stdout) <= 3.0 * forward


def test_image_size_needs_synthetic() -> None:
    run = script("--image-size", "224")
    assert run.code == 2 and "--image-size=224 needs --data synthetic" in run.err


@pytest.mark.slow
def test_imagefolder_decode_paths(imagefolder_root: Path) -> None:
    """`--data imagefolder`: the PIL and `data.decode=cpu` worker rows with their per-round
    ratio to PIL, the model row, and the GPU rows named as not measured on a CPU."""
    folder = ["--data", "imagefolder", "--data-dir", str(imagefolder_root)]
    stdout, rows = bench(
        *folder, "--model", "resnet18", "--batch-size", "2", "--input-batches", "2"
    )
    pil, cpu = (
        rows[next(k for k in rows if k.startswith(f"worker: {name}"))]
        for name in ("PIL", "`data.decode=cpu`")
    )
    assert pil[2] == "1.00" and float(cpu[2]) > 0 and float(cpu[0].replace(",", "")) > 0
    (model,) = [cells for key, cells in rows.items() if key.startswith("model alone (resnet18")]
    assert float(model[0]) > 0 and model[3] == "1.00"
    assert "`data.decode=gpu`: not measured (needs --device cuda)." in stdout
    assert f"ImageFolder {imagefolder_root}, augmentation=torchvision_v1 (224 px)" in stdout


def test_pil_row_resizes_the_whole_image_as_before() -> None:
    """The PIL row is the pipeline before `RandomShorterSideCrop`: there `augmentation=paper`
    is torchvision's RandomResize of the whole image to a side in [256, 480], then RandomCrop."""
    two_step = runpy.run_path(str(SCRIPT))["two_step"]
    flip = v2.RandomHorizontalFlip()
    resize, crop, rest = two_step([RandomShorterSideCrop(224, 256, 480), flip])
    assert type(resize) is v2.RandomResize and (resize.min_size, resize.max_size) == (256, 481)
    assert type(crop) is v2.RandomCrop and tuple(crop.size) == (224, 224) and rest is flip


def test_imagefolder_needs_a_folder(tmp_path: Path) -> None:
    run = script("--data", "imagefolder", "--data-dir", str(tmp_path))
    assert run.code == 2 and "--data imagefolder needs --data-dir DIR with train/" in run.err
