"""Every `reslab-*` command shown in README.md and docs/*.md, with the overrides it shows:
`reslab-train` commands compose, resolve and pass the config checks (sweeps: every point of
the grid); `reslab-eval` commands merge with a real checkpoint and build their data;
`reslab-summary` commands run."""

from __future__ import annotations

import itertools
import re
import shlex
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_module
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override, ValueType
from omegaconf import DictConfig, open_dict

from reslab.checks.preflight import check_values
from reslab.commands import eval as reslab_eval
from reslab.commands.startup import register_resolvers
from reslab.commands.summary import main as summary_main
from reslab.errors import ConfigError, one_line
from reslab.runs.dirs import expand_resume
from reslab.training.builders import build_datamodule, build_module, build_trainer

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMAND = re.compile(r"^(?:\$ )?(reslab-(?:train|eval|summary|report))(?:\s|$)")


def documented_commands() -> list[tuple[str, str, list[str], str | None]]:
    """(where, program, arguments, the error line shown after it) of each command in a fenced
    code block of the docs; `BLOCKS[where]` is the whole block around it."""
    found: list[tuple[str, str, list[str], str | None]] = []
    for doc in DOCS:
        in_block, pending, block, here = False, "", "", []
        for number, line in enumerate(doc.read_text().splitlines(), start=1):
            if line.startswith("```"):
                for where in here:
                    BLOCKS[where] = block
                in_block, pending, block, here = not in_block, "", "", []
                continue
            if not in_block:
                continue
            block += line + "\n"
            if (
                line.startswith("reslab: error:")
                and here
                and here[-1] == f"{doc.name}:{number - 1}"
            ):
                found[-1] = (*found[-1][:3], line)
                continue
            line = pending + line.split(" #", 1)[0].rstrip()
            if line.endswith("\\"):
                pending = line[:-1] + " "
                continue
            pending = ""
            match = COMMAND.match(line.strip())
            if match:
                words = shlex.split(line.strip().removeprefix("$ "))
                found.append((f"{doc.name}:{number}", match.group(1), words[1:], None))
                here.append(f"{doc.name}:{number}")
    return found


# The text of the code block around each command: what the docs show with it.
BLOCKS: dict[str, str] = {}
COMMANDS = documented_commands()


def by_program(program: str) -> list[tuple[str, list[str]]]:
    """The commands of `program` that the docs show working (not those shown failing; `--help`
    composes no run: test_cli.py runs it)."""
    return [
        (where, args)
        for where, prog, args, error in COMMANDS
        if prog == program and not error and "--help" not in args
    ]


ERRORS = [(where, prog, args, error) for where, prog, args, error in COMMANDS if error]


def placeholders(args: list[str], values: dict[str, str]) -> list[str]:
    """Fill the docs' placeholders (`<run>`, `...`); drop `<same overrides>` and `[optional]`
    words, which stand for the user's own choices."""
    out = []
    for arg in args:
        if arg.startswith("[") or arg in ("<same", "overrides>", "sweep"):
            continue
        for key, value in values.items():
            arg = arg.replace(key, value)
        out.append(arg)
    return out


def values(override: Override) -> list[str]:
    """The overrides a sweep axis stands for: each choice, or an interval's two ends (a
    search samples between them)."""
    key = override.get_key_element()
    if override.value_type == ValueType.INTERVAL_SWEEP:
        interval = override.value()
        return [f"{key}={interval.start}", f"{key}={interval.end}"]
    if override.is_sweep_override():
        return [f"{key}={v}" for v in override.sweep_string_iterator()]
    return [override.input_line]


def grid(overrides: list[str]) -> list[list[str]]:
    """Every point of a sweep's grid (`model.depth=20,56`), as plain overrides."""
    axes = [values(o) for o in OverridesParser.create().parse_overrides(overrides)]
    return [list(point) for point in itertools.product(*axes)]


def compose_train(args: list[str], tmp_path: Path) -> list[DictConfig]:
    """The config of every job the command runs: its own sweep, times its experiment's."""
    cfgs = []
    with initialize_config_module("reslab.configs", version_base="1.3"):
        for point in grid([a for a in args if a != "-m"]):
            base = compose("train", overrides=point, return_hydra_config=True)
            params = dict(base.hydra.sweeper.get("params") or {})
            keys = {p.split("=")[0] for p in point}
            experiment = [f"{k}={v}" for k, v in params.items() if k not in keys]
            for extra in grid(experiment):
                cfg = compose("train", overrides=point + extra, return_hydra_config=True)
                HydraConfig().set_config(cfg)
                with open_dict(cfg):
                    cfg.paths.output_dir = str(tmp_path)
                    del cfg.hydra
                cfgs.append(cfg)
    return cfgs


@pytest.fixture(scope="module", autouse=True)
def _resolvers() -> None:
    register_resolvers()


def test_the_docs_show_commands() -> None:
    assert len(by_program("reslab-train")) >= 20 and by_program("reslab-eval")


@pytest.mark.parametrize(("where", "args"), by_program("reslab-train"), ids=lambda x: str(x))
def test_documented_train_command_composes_and_passes_the_checks(
    where: str, args: list[str], tmp_path: Path
) -> None:
    args = placeholders(args, {"logs/train/runs/<run>": str(tmp_path / "run")})
    args = placeholders(args, {"logs/train/multiruns/<sweep>": str(tmp_path / "sweep")})
    args = placeholders(args, {"<name>": "resnet20"})
    saved = tmp_path / "run" / ".hydra" / "overrides.yaml"  # a run `resume=<run dir>` reads
    saved.parent.mkdir(parents=True)
    saved.write_text("- model.depth=8\n")
    args = expand_resume(["reslab-train", *args])[1:]  # as the entry point rewrites them
    shown = BLOCKS[where]
    for cfg in compose_train(args, tmp_path):
        try:
            check_values(cfg)
        except ConfigError as e:  # a sweep point the docs show failing, with this error
            assert one_line(e) in shown, e


def save_checkpoint(overrides: list[str], out: Path) -> Path:
    """A real reslab checkpoint of a run with `overrides`: its module and trainer, saved."""
    (cfg,) = compose_train(["model.depth=8", *overrides], out)
    trainer = build_trainer(cfg)
    module = build_module(cfg)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(out / "best.ckpt", weights_only=True)
    return out / "best.ckpt"


@pytest.fixture(scope="module")
def checkpoints(
    cifar10_root: Path, imagefolder_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """A CIFAR-10 run's, and an ImageFolder run's (the ImageNet section's 10-crop commands)."""
    cifar = [f"paths.data_dir={cifar10_root}", "data.verify_md5=false"]
    folder = ["data=imagefolder", f"data.root={imagefolder_root}"]
    return {
        "cifar": save_checkpoint(cifar, tmp_path_factory.mktemp("cifar")),
        "imagefolder": save_checkpoint(
            [*folder, "augmentation=torchvision_v1"], tmp_path_factory.mktemp("folder")
        ),
    }


@pytest.mark.parametrize(("where", "args"), by_program("reslab-eval"), ids=lambda x: str(x))
def test_documented_eval_command_builds_its_run(
    where: str,
    args: list[str],
    checkpoints: dict[str, Path],
    cifar10_root: Path,
    tmp_path: Path,
) -> None:
    weights = tmp_path / "weights.pth"
    checkpoint = checkpoints["imagefolder" if "ten_crop=true" in args else "cifar"]
    args = placeholders(
        args,
        {
            "logs/train/runs/<run>/checkpoints/best.ckpt": str(checkpoint),
            "<run>/checkpoints/best.ckpt": str(checkpoint),
            "<run>/checkpoints/last.ckpt": str(checkpoint),
            "ckpt_path=...": f"ckpt_path={checkpoint}",
            "/path/to/resnet50-0676ba61.pth": str(weights),
            "/elsewhere": str(cifar10_root),
        },
    )
    args = reslab_eval.values_on_top(args)  # as the entry point rewrites them
    with initialize_config_module("reslab.configs", version_base="1.3"):
        cfg = compose("eval", overrides=args, return_hydra_config=True)
    cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
    if cfg.get("weights"):
        from reslab.training.builders import build_net

        torch.save(build_net(cfg).state_dict(), weights)
    stored = torch.load(cfg.get("ckpt_path") or weights, weights_only=True)
    run_cfg = reslab_eval.run_config(cfg, stored)
    check_values(run_cfg)
    assert str(run_cfg.model._target_).startswith("reslab.models."), where
    if "cifar" in run_cfg.data.get("name", ""):
        with open_dict(run_cfg):
            run_cfg.data.root = str(cifar10_root)
        datamodule = build_datamodule(run_cfg)
        datamodule.setup("test")
        assert len(datamodule.test_dataloader()) > 0, where


@pytest.mark.parametrize(("where", "args"), by_program("reslab-summary"), ids=lambda x: str(x))
def test_documented_summary_command_runs(
    where: str, args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    args = placeholders(args, {"<name>": "resnet20"})
    monkeypatch.setattr(sys, "argv", ["reslab-summary", *args])
    summary_main()
    assert "total" in capsys.readouterr().out


def test_the_docs_show_errors() -> None:
    assert len(ERRORS) >= 5


@pytest.mark.parametrize(("where", "program", "args", "error"), ERRORS, ids=lambda x: str(x))
def test_documented_error_is_what_the_command_prints(
    where: str,
    program: str,
    args: list[str],
    error: str,
    cifar10_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture,
) -> None:
    """The command, run by its own entry point on generated data, fails with the line the docs
    show (`<...>` in it stands for any text)."""
    from reslab.commands.eval import main as eval_main
    from reslab.commands.train import main as train_main

    run = tmp_path / "logs" / "train" / "runs" / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "summary.json").write_text('{"status": "completed"}')
    args = placeholders(args, {"logs/train/runs/<run>": str(run)})
    monkeypatch.setenv("DATA_DIR", str(cifar10_root))
    monkeypatch.setenv("RESLAB_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.chdir(tmp_path)
    cifar = not any(a.startswith("data=image") for a in args)  # the generated CIFAR-10
    monkeypatch.setattr(sys, "argv", [program, *args, *["data.verify_md5=false"] * cifar])
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit:
        {"reslab-train": train_main, "reslab-eval": eval_main}[program]()
    assert exit.value.code != 0
    printed = [ln for ln in capfd.readouterr().err.splitlines() if ln.startswith("reslab: error:")]
    pattern = ".*".join(re.escape(part) for part in re.split(r"<[^>]*>", error))
    assert len(printed) == 1 and re.fullmatch(pattern, printed[0]), (error, printed)
