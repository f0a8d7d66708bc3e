"""A plain (non-editable) install: the wheel of the repository ships the configs, and its
console script trains from a directory outside the repository."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.processes import dirs_env, ok
from helpers.runs import SHORT_EVAL, TINY

ROOT = Path(__file__).resolve().parents[1]
# What the wheel is built from (pyproject.toml: the package in src/, its configs in configs/).
BUILD_INPUTS = ("pyproject.toml", "README.md", "src", "configs")
RUN = ["trainer=cpu", "trainer.max_steps=2", *TINY, *SHORT_EVAL]


def run(cmd: list[str | Path], **kwargs) -> subprocess.CompletedProcess:
    return ok(subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs))


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv holding the repository's wheel, installed with `pip install --no-deps`; its
    dependencies come from this environment's site-packages (a `.pth` file)."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"
    source.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in BUILD_INPUTS:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy(ROOT / name, source / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", tmp / "dist", source])
    (wheel,) = (tmp / "dist").glob("reslab-*.whl")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    site = run([python, "-c", "import site; print(site.getsitepackages()[0])"]).stdout.strip()
    deps = [p for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
    Path(site, "deps.pth").write_text("".join(f"{p}\n" for p in deps if Path(p).is_dir()))
    run([python, "-m", "pip", "--disable-pip-version-check", "-q", "install", "--no-deps", wheel])
    return venv


def venv_env() -> dict[str, str]:
    """This environment without anything that points Python at the repository."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@pytest.mark.slow
def test_the_wheel_ships_the_package_and_its_configs(venv: Path, tmp_path: Path) -> None:
    code = (
        "import importlib.resources as r, reslab; print(reslab.__file__); "
        "print(r.files('reslab.configs').joinpath('train.yaml').is_file())"
    )
    out = run([venv / "bin" / "python", "-c", code], cwd=tmp_path, env=venv_env()).stdout
    location, has_configs = out.split()
    assert Path(location).is_relative_to(venv) and has_configs == "True"  # not the repository's
    help_text = run([venv / "bin" / "reslab-train", "--help"], cwd=tmp_path, env=venv_env())
    groups = [ln for ln in help_text.stdout.splitlines() if ln.startswith("model: ")]
    assert "resnet20" in groups[0].replace(",", " ").split()  # the configs come with the wheel


@pytest.mark.slow
def test_the_installed_console_script_trains_outside_the_repository(
    venv: Path, cifar10_root: Path, tmp_path: Path
) -> None:
    env = {**venv_env(), **dirs_env(cifar10_root, tmp_path / "logs")}
    work = tmp_path / "work"  # outside the repository, and holds no configs
    work.mkdir()
    run([venv / "bin" / "reslab-train", *RUN], cwd=work, env=env)
    (run_dir,) = (tmp_path / "logs" / "train" / "runs").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["steps"] == 2
    assert summary["run_name"] == "resnet-8_seed0"
    assert list(work.iterdir()) == []
