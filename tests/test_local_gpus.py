"""`hydra/launcher=local_gpus` with real worker processes: a multirun over 2 named GPUs with 2
jobs per GPU, whose jobs report the `CUDA_VISIBLE_DEVICES` they saw and when they ran. No GPU
is needed: the launcher only chooses what each job's process sees."""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import hydra
import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from reslab.commands.startup import CONFIG_PATH
from reslab.commands.train import main as train_main
from reslab.training.gpu_slots import plan_slots, visible_gpus

# Seconds each job runs after it starts; jobs 0-3 first wait until all four have started.
SECONDS = [0.5, 0.5, 0.5, 0.5, 0.2, 1.5, 0.2, 1.5, 0.2, 1.0]


def report(cfg: DictConfig) -> int:
    """A sweep job: which GPU its process was given, its process, when it ran."""
    out = Path(HydraConfig.get().runtime.output_dir)
    start = time.time()
    (out.parent / f"started_{cfg.job}").touch()
    while cfg.job < 4 and len(list(out.parent.glob("started_*"))) < 4:
        assert time.time() - start < 120, "the first four jobs never ran at once"
        time.sleep(0.05)
    time.sleep(SECONDS[cfg.job])
    record = {"gpu": os.environ.get("CUDA_VISIBLE_DEVICES"), "pid": os.getpid()}
    record.update(job=cfg.job, start=start, end=time.time())
    (out / "job.json").write_text(json.dumps(record))
    return cfg.job


def most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def test_each_gpu_runs_its_share_of_jobs_and_never_more_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweep = tmp_path / "sweep"
    app = hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=None)(report)
    argv = ["app", "-m", f"+job=range({len(SECONDS)})", f"hydra.sweep.dir={sweep}"]
    argv += ["hydra/launcher=local_gpus", "hydra.launcher.gpus=[0,1]"]
    monkeypatch.setattr(sys, "argv", [*argv, "hydra.launcher.jobs_per_gpu=2"])
    app()
    jobs = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/job.json"))]
    assert sorted(j["job"] for j in jobs) == list(range(len(SECONDS)))

    first = [j for j in jobs if j["job"] < 4]  # ran at once: one per worker process
    assert max(j["start"] for j in first) < min(j["end"] for j in first)
    assert Counter(j["gpu"] for j in first) == {"0": 2, "1": 2}
    assert len({j["pid"] for j in first}) == 4

    gpu_of_process = defaultdict(set)
    spans = defaultdict(list)
    for j in jobs:
        gpu_of_process[j["pid"]].add(j["gpu"])
        spans[j["gpu"]].append((j["start"], j["end"]))
    assert len(gpu_of_process) == 4 and all(len(g) == 1 for g in gpu_of_process.values())
    assert set(spans) == {"0", "1"}
    assert all(most_at_once(s) == 2 for s in spans.values())


def test_slots_interleave_gpus_and_follow_cuda_visible_devices(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert plan_slots([0, 1], 2) == ["0", "1", "0", "1"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert visible_gpus(None) == ["2", "3"] and plan_slots(None, 1) == ["2", "3"]
    assert visible_gpus(["GPU-5d1c"]) == ["GPU-5d1c"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ([], "hydra/launcher=local_gpus found no GPU"),
        (["hydra.launcher.gpus=[0]", "hydra.launcher.jobs_per_gpu=0"], "jobs_per_gpu=0 is not"),
        (["hydra.launcher.gpus=[0]", "trainer.devices=2"], "trainer.devices=2 but"),
    ],
)
def test_a_launcher_mistake_is_one_line_before_any_job(
    args: list[str],
    needle: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture,
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("RESLAB_LOG_DIR", str(tmp_path / "logs"))
    sweep = tmp_path / "sweep"
    argv = ["reslab-train", "-m", "hydra/launcher=local_gpus", "seed=0,1", *args]
    monkeypatch.setattr(sys, "argv", [*argv, f"hydra.sweep.dir={sweep}"])
    with pytest.raises(SystemExit) as exit:
        train_main()
    stderr = capfd.readouterr().err
    assert exit.value.code == 2 and "Traceback" not in stderr
    (line,) = [ln for ln in stderr.splitlines() if needle in ln]
    assert line.startswith("reslab: error:")
    assert not sweep.exists()  # no job started, and the refused sweep left no dir
