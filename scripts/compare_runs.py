"""Runs side by side: a table and training curves of any `reslab-train` run dirs, each labelled
by the config values in which it differs from the others (e.g. `data.pipeline=workers seed=1`).

    python scripts/compare_runs.py logs/train/runs/<run a> logs/train/runs/<run b> ... \
        --out compare.png

`reslab-report` reads a degradation sweep (plain vs residual by depth); this reads any runs.
Prints a markdown table (the run's status: completed, failed, interrupted, running or
stopped; train error at the end, final and best validation error on a held-out split, the test
error and whose weights it is of, steps, precision, wall time) and draws the training error
(every logging step, smoothed; dashed) and the validation error (each validation; solid)
against iterations.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from omegaconf import OmegaConf

from reslab.commands.report import read_curves, smooth
from reslab.commands.startup import register_resolvers
from reslab.runs import layout as run_layout
from reslab.runs import record as run_record
from reslab.training.callbacks import duration
from reslab.training.scores import TRAIN_ERR_STEP, VAL_ERR

# Keys that say where or how a run ran, not what it trained: never a label.
IGNORED = (
    "paths.", "hydra", "run_name", "task_name", "trainer.default_root_dir", "logger", "callbacks",
    "resume", "ckpt_path", "tags", "data.num_workers", "data.download", "data.verify_md5",
    "trainer.log_every_n_steps", "trainer.fast_dev_run", "trainer.enable_",
)  # fmt: skip


def flat_config(run_dir: Path) -> dict[str, tuple[Any, bool]]:
    """The run's stored config as `a.b.c: (value, derived)`: the value resolved where it
    resolves outside the run (`${default_precision:...}` does; `${hydra:...}` does not and
    stays as written), and whether it is an interpolation of other values."""
    cfg = OmegaConf.load(run_layout.config_file(run_dir))
    out: dict[str, tuple[Any, bool]] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(value, f"{prefix}{key}.")
            return
        key, derived = prefix.rstrip("."), isinstance(node, str) and "${" in node
        try:
            out[key] = (OmegaConf.select(cfg, key, throw_on_resolution_failure=True), derived)
        except Exception:  # an interpolation that needs the live run: compare it as written
            out[key] = (node, derived)

    walk(OmegaConf.to_container(cfg), "")
    return out


def chosen(run_dir: Path) -> dict[str, Any] | None:
    """The values the researcher gave on the run's command line (`.hydra/overrides.yaml`), a
    group's option (`model=resnet56`) included; None for a dir without that file."""
    path = run_dir / run_layout.OVERRIDES
    if not path.is_file():
        return None
    given = OverridesParser.create().parse_overrides(OmegaConf.load(path) or [])
    return {o.key_or_group: o.value() for o in given if not o.is_delete()}


def group_choices(run_dir: Path) -> dict[str, Any]:
    hydra_file = run_dir / ".hydra" / "hydra.yaml"
    if not hydra_file.is_file():
        return {}
    return dict(OmegaConf.load(hydra_file).hydra.runtime.choices)


def labels(run_dirs: Sequence[Path]) -> list[str]:
    """`key=value` of the values the runs were given on their command lines and in which they
    differ (where they have `.hydra/overrides.yaml`), else of every config key whose value is
    not the same in all runs, leaving out keys that every run derives from others
    (`data.seed: ${seed}` follows `seed`); never how a run ran (`IGNORED`)."""
    configs = [flat_config(d) for d in run_dirs]
    given = [chosen(d) for d in run_dirs]
    missing = (None, False)
    if any(g is not None for g in given):
        keys = sorted({k for g in given if g for k in g if not k.startswith(IGNORED)})
        choices = [group_choices(d) for d in run_dirs]

        def value(i: int, key: str) -> Any:
            if given[i] and key in given[i]:
                return given[i][key]
            return choices[i][key] if key in choices[i] else configs[i].get(key, missing)[0]

        values = [{k: value(i, k) for k in keys} for i in range(len(run_dirs))]
    else:
        keys = sorted(k for k in set().union(*configs) if not k.startswith(IGNORED))
        keys = [k for k in keys if not all(c.get(k, missing)[1] for c in configs)]
        values = [{k: c.get(k, missing)[0] for k in keys} for c in configs]
    differ = [k for k in keys if len({repr(v[k]) for v in values}) > 1]
    return [
        " ".join(f"{k}={as_typed(v[k])}" for k in differ) or d.name
        for v, d in zip(values, run_dirs, strict=True)
    ]


def as_typed(value: Any) -> str:
    """A value as it is written on a command line: `true`, `null`, not Python's `True`."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return str(value)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def table(run_dirs: Sequence[Path], names: Sequence[str]) -> str:
    """One row per run. The test error follows the final-weights rule (`run_record`), and the
    validation errors appear only for a split held out from training: on the test set their
    best is a minimum over test evaluations and their final is the test error."""
    lines = [
        "| run | status | train error (%) | held-out val error (%): final | best | weights "
        "| test error (%) | steps | precision | wall time |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | --- | ---: |",
    ]
    for run_dir, name in zip(run_dirs, names, strict=True):
        record = run_record.read(run_dir) or {}
        config = OmegaConf.to_container(OmegaConf.load(run_layout.config_file(run_dir)))
        held_out = not run_record.record_val_is_test(record, config)
        val = (record.get("val_err") or {}) if held_out else {}
        test_err, weights = run_record.reported_test_error(record, config)
        wall = record.get("wall_time_s")
        lines.append(
            f"| {name} | {run_record.status(run_dir, record)} "
            f"| {_pct((record.get('train_err') or {}).get('final'))} "
            f"| {_pct(val.get('final'))} | {_pct(val.get('best'))} | {weights or ''} "
            f"| {_pct(test_err)} "
            f"| {record.get('steps', '')} | {record.get('precision', '')} "
            f"| {'' if wall is None else duration(wall)} |"
        )
    return "\n".join(lines)


def plot(run_dirs: Sequence[Path], names: Sequence[str]) -> Figure:
    """One colour per run, named once in a legend below the axes (labels wrapped to the
    figure's width); line style says train (dashed) or validation (solid)."""
    fig = Figure(figsize=(8, 4.5 + 0.3 * len(run_dirs)), layout="constrained")
    ax = fig.subplots()
    handles = []
    for i, (run_dir, name) in enumerate(zip(run_dirs, names, strict=True)):
        curves = read_curves(run_layout.metrics_csv(run_dir))
        colour = colormaps["tab10"](i % 10)
        for key, style, width in ((TRAIN_ERR_STEP, "--", 1.0), (VAL_ERR, "-", 2.0)):
            points = curves.get(key, [])
            if key == TRAIN_ERR_STEP:
                points = smooth(points)
            if points:
                xs, ys = zip(*points, strict=True)
                marker = "o" if len(points) == 1 else None
                ax.plot(xs, ys, style, linewidth=width, color=colour, marker=marker)
        handles.append(Line2D([], [], color=colour, linewidth=2, label=textwrap.fill(name, 90)))
    handles += [
        Line2D([], [], color="grey", linestyle="--", label="training error"),
        Line2D([], [], color="grey", linestyle="-", linewidth=2, label="validation error"),
    ]
    ax.set_xlabel("iterations")
    ax.set_ylabel("error (%)")
    ax.grid(alpha=0.3)
    fig.legend(handles=handles, loc="outside lower center", fontsize=7, ncol=1, frameon=False)
    return fig


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dirs", nargs="+", type=Path, help="reslab-train run dirs")
    parser.add_argument("--out", type=Path, help="write the curves here (.png, .pdf, .svg)")
    args = parser.parse_args(argv)
    register_resolvers()
    missing = [str(d) for d in args.run_dirs if not run_layout.config_file(d).is_file()]
    if missing:
        parser.error(f"not a reslab-train run dir (no .hydra/config.yaml): {', '.join(missing)}")
    names = labels(args.run_dirs)
    print(table(args.run_dirs, names))
    if args.out:
        plot(args.run_dirs, names).savefig(args.out, dpi=120)
        print(f"curves: {args.out}")


if __name__ == "__main__":
    main()
