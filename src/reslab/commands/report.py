"""`reslab-report <sweep dir>`: a Table-6-style table and Figure-6-style plots from the run dirs
of a `reslab-train -m` sweep. Missing, failed or unreadable runs are listed, not fatal."""

from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.figure import Figure
from omegaconf import OmegaConf

from reslab.commands.task import one_line_errors
from reslab.errors import ConfigError
from reslab.runs import layout as run_layout
from reslab.runs import record as run_record
from reslab.training.scores import TRAIN_ERR_STEP, VAL_ERR


@dataclass
class Run:
    """One job dir of a sweep: its config, summary (None if it never finished) and curves."""

    dir: Path
    config: dict[str, Any]
    summary: dict[str, Any] | None
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    unreadable: str | None = None

    @property
    def status(self) -> str:
        if self.unreadable:
            return "unreadable"
        return self.summary.get("status", "completed") if self.summary else "missing"

    @property
    def train_error(self) -> float | None:
        """Training error (%) at the end of training: the mean over the last epoch."""
        return ((self.summary or {}).get("train_err") or {}).get("final")

    @property
    def official_data(self) -> bool:
        """The data is the official files, checked by their md5: CIFAR with `data.verify_md5`,
        ImageNet read from its archives (`data.format=ilsvrc2012`: torchvision checks them as
        it unpacks them; a folder of JPEGs has no checksum). The paper's numbers compare only
        with runs on the official files."""
        data = self.config.get("data", {})
        return bool(data.get("verify_md5", False)) or data.get("format") == "ilsvrc2012"

    @property
    def residual(self) -> bool:
        return bool(self.config.get("model", {}).get("residual", True))

    @property
    def depth(self) -> int:
        return int(self.config.get("model", {}).get("depth") or 0)

    @property
    def error(self) -> float | None:
        """Test error (%) of the run under the final-weights rule (`run_record`): never a
        minimum over test evaluations."""
        return (
            run_record.reported_test_error(self.summary, self.config)[0] if self.summary else None
        )

    @property
    def weights(self) -> str | None:
        """Whose test error `error` is: "final" weights or the "best" held-out checkpoint."""
        return (
            run_record.reported_test_error(self.summary, self.config)[1] if self.summary else None
        )


def read_curves(path: Path) -> dict[str, list[tuple[int, float]]]:
    """Every numeric column of a Lightning CSVLogger file as (step, value) pairs."""
    curves: dict[str, list[tuple[int, float]]] = defaultdict(list)
    if not path.is_file():
        return {}
    with path.open() as f:
        for row in csv.DictReader(f):
            step = int(row.get("step") or 0)
            for key, value in row.items():
                if key not in ("step", "epoch") and value not in ("", None):
                    curves[key].append((step, float(value)))
    return dict(curves)


def load_runs(sweep_dir: Path) -> list[Run]:
    """Every job dir (one holding `.hydra/config.yaml`) under `sweep_dir`, in job order."""
    if not sweep_dir.is_dir():
        raise ConfigError(f"sweep dir {sweep_dir} does not exist; pass logs/train/multiruns/<time>")
    runs = []
    for run_dir, record, unreadable in run_record.read_sweep(sweep_dir):
        config = OmegaConf.to_container(OmegaConf.load(run_layout.config_file(run_dir)))
        curves = read_curves(run_layout.metrics_csv(run_dir))
        runs.append(Run(run_dir, config, record, curves, unreadable))
    if not runs:
        raise ConfigError(
            f"no run dirs (with .hydra/config.yaml) under {sweep_dir}; pass the dir of a "
            "`reslab-train -m` sweep, e.g. logs/train/multiruns/<time>"
        )
    return runs


def paper_error(runs: Iterable[Run], depth: int) -> float | None:
    """The experiment's top-level `paper_error`: one number, or one per depth. Only for runs on
    the official files (md5-checked): on any other copy the paper's figure does not compare."""
    for run in runs:
        paper = run.config.get("paper_error")
        if not run.official_data:
            continue
        if isinstance(paper, dict):
            value = paper.get(depth, paper.get(str(depth)))
            if value is not None:
                return float(value)
        elif paper is not None:
            return float(paper)
    return None


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


# (column prefix, what a run contributes): the final training error is Figure 6's dashed
# curve at its end, the test error Table 6's number.
MEASURES = (("train", lambda r: r.train_error), ("test", lambda r: r.error))


def table_rows(runs: Sequence[Run]) -> list[dict[str, Any]]:
    """One row per depth: params, MACs, plain and residual final training error and test
    error (mean, std, n over the seeds of completed runs) and the paper's error."""
    done = [r for r in runs if r.status == "completed" and r.error is not None]
    rows = []
    for depth in sorted({r.depth for r in runs}):
        row: dict[str, Any] = {"depth": depth}
        for kind, residual in (("plain", False), ("residual", True)):
            group = [r for r in done if r.depth == depth and r.residual == residual]
            row[f"{kind}_params"] = group[0].summary.get("params") if group else None
            row[f"{kind}_macs"] = group[0].summary.get("macs") if group else None
            row[f"{kind}_n"] = len(group)
            for measure, value in MEASURES:
                values = [v for r in group if (v := value(r)) is not None]
                mean, std = mean_std(values)
                row.update({f"{kind}_{measure}_mean": mean, f"{kind}_{measure}_std": std})
        row["paper_err"] = paper_error(runs, depth)
        rows.append(row)
    return rows


def _err(mean: float | None, std: float | None, n: int) -> str:
    if mean is None:
        return "-"
    return f"{mean:.2f} ± {std:.2f} (n={n})" if n > 1 else f"{mean:.2f}"


def _count(plain: int | None, residual: int | None, scale: float, unit: str) -> str:
    values = sorted({v for v in (plain, residual) if v is not None})
    return " / ".join(f"{v / scale:.2f}{unit}" for v in values) or "-"


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The table; the paper's column only where some run used the official (md5-checked) data."""
    paper = any(r["paper_err"] is not None for r in rows)
    header = ["depth", "params", "MACs"]
    for title in ("final train error (%)", "test error (%)"):
        header += [f"plain {title}", f"residual {title}"]
    header += ["paper, residual test (%)"] if paper else []
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for r in rows:
        cells = [
            str(r["depth"]),
            _count(r["plain_params"], r["residual_params"], 1e6, "M"),
            _count(r["plain_macs"], r["residual_macs"], 1e6, "M"),
        ]
        for measure, _ in MEASURES:
            for kind in ("plain", "residual"):
                mean, std = r[f"{kind}_{measure}_mean"], r[f"{kind}_{measure}_std"]
                cells.append(_err(mean, std, r[f"{kind}_n"]))
        if paper:
            cells.append("-" if r["paper_err"] is None else f"{r['paper_err']:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def weights_note(runs: Sequence[Run]) -> str:
    """Which weights the test errors are of, counted over the table's runs."""
    done = [r for r in runs if r.status == "completed" and r.error is not None]
    final = sum(r.weights == "final" for r in done)
    best = len(done) - final
    parts = [f"of the final weights ({final} run{'s' * (final != 1)})"] if final else []
    if best:
        parts.append(
            f"of the checkpoint with the lowest error on a validation split held out from "
            f"training ({best} run{'s' * (best != 1)})"
        )
    return f"\nTest error: {', '.join(parts)}.\n" if parts else ""


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def mean_curve(runs: Sequence[Run], key: str) -> list[tuple[int, float]]:
    """`key` averaged over the runs (seeds) at the steps all of them logged."""
    per_run = [dict(r.curves.get(key, [])) for r in runs]
    steps = sorted(set.intersection(*(set(c) for c in per_run))) if per_run else []
    return [(s, statistics.fmean(c[s] for c in per_run)) for s in steps]


def smooth(points: Sequence[tuple[int, float]], fraction: float = 0.03) -> list[tuple[int, float]]:
    """A centred moving average over `fraction` of the points (at least 1 each side): the
    step-level training error is the mean of one logging period, still noisy at a small batch.
    A short run's few points are left as they are: a window wider than a tenth of them would
    flatten the curve (two points became one level)."""
    half = max(1, int(len(points) * fraction / 2))
    if 2 * half + 1 > len(points) / 10:
        return list(points)
    ys = [y for _, y in points]
    return [
        (x, statistics.fmean(ys[max(0, i - half) : i + half + 1]))
        for i, (x, _) in enumerate(points)
    ]


def _by_arch(runs: Sequence[Run]) -> dict[tuple[bool, int], list[Run]]:
    groups: dict[tuple[bool, int], list[Run]] = defaultdict(list)
    for r in runs:
        if r.curves:
            groups[(r.residual, r.depth)].append(r)
    return groups


def plot_curves(runs: Sequence[Run]) -> Figure:
    """Figure 6: training error (dashed: every logging step, each the mean over its logging
    period, smoothed) and test error (solid, each validation) vs iterations; plain nets left,
    residual nets right, one colour per depth; seeds averaged."""
    groups = _by_arch(runs)
    depths = sorted({d for _, d in groups})
    colour = {d: colormaps["tab10"](i % 10) for i, d in enumerate(depths)}
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, residual in zip(axes, (False, True), strict=True):
        for depth in depths:
            group = groups.get((residual, depth), [])
            if not group:
                continue
            name = f"{'ResNet' if residual else 'plain'}-{depth}"
            train = smooth(mean_curve(group, TRAIN_ERR_STEP))
            for points, style, width, label in (
                (train, "--", 1.0, f"{name} train"),
                (mean_curve(group, VAL_ERR), "-", 2.0, f"{name} test"),
            ):
                if points:
                    xs, ys = zip(*points, strict=True)
                    marker = "o" if len(points) == 1 else None  # a lone point draws no line
                    ax.plot(xs, ys, style, linewidth=width, color=colour[depth], label=label,
                            marker=marker)  # fmt: skip
        ax.set_title("plain" if not residual else "residual")
        ax.set_xlabel("iterations")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7, ncol=2)
    axes[0].set_ylabel("error (%)")
    fig.tight_layout()
    return fig


def _mean_of(runs: Sequence[Run], key: str) -> float | None:
    values = [v for r in runs for _, v in r.curves.get(key, [])]
    return statistics.fmean(values) if values else None


def plot_gradients(runs: Sequence[Run]) -> Figure:
    """Mean per-stage gradient norm over training vs depth, plain (dashed) and residual
    (solid); right: residual-branch / shortcut magnitude per stage of the residual nets."""
    groups = _by_arch(runs)
    stages = sorted(
        {k.split("/", 1)[1] for r in runs for k in r.curves if k.startswith("grad_norm/")}
    )
    fig = Figure(figsize=(11, 4.2))
    ax_grad, ax_ratio = fig.subplots(1, 2)
    for i, stage in enumerate(stages):
        colour = colormaps["tab10"](i % 10)
        for residual, style in ((False, "--"), (True, "-")):
            points = [
                (d, m)
                for (res, d), group in sorted(groups.items())
                if res == residual and (m := _mean_of(group, f"grad_norm/{stage}")) is not None
            ]
            if points:
                xs, ys = zip(*points, strict=True)
                kind = "residual" if residual else "plain"
                ax_grad.plot(xs, ys, style, marker="o", color=colour, label=f"{kind} {stage}")
        ratios = [
            (d, m)
            for (res, d), group in sorted(groups.items())
            if res and (m := _mean_of(group, f"branch_ratio/{stage}")) is not None
        ]
        if ratios:
            xs, ys = zip(*ratios, strict=True)
            ax_ratio.plot(xs, ys, "-", marker="o", color=colour, label=stage)
    ax_grad.set_title("gradient norm by depth")
    ax_grad.set_ylabel("mean L2 norm of the stage's gradients")
    ax_ratio.set_title("residual nets: ||F(x)|| / ||shortcut(x)||")
    ax_ratio.set_ylabel("mean ratio over blocks and steps")
    for ax in (ax_grad, ax_ratio):
        ax.set_xlabel("depth")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    if ax_grad.lines and all(min(line.get_ydata()) > 0 for line in ax_grad.lines):
        ax_grad.set_yscale("log")
    fig.tight_layout()
    return fig


def problems(runs: Sequence[Run]) -> list[str]:
    """One line per run that is missing (no summary) or did not complete."""
    out = []
    for r in runs:
        if r.unreadable:
            out.append(f"{r.dir.name}: unreadable: {r.unreadable}")
        elif r.status != "completed":
            why = (r.summary or {}).get("error") or "no summary.json (still running or killed)"
            out.append(f"{r.dir.name}: {r.status}: {why}")
        elif r.error is None or (isinstance(r.error, float) and math.isnan(r.error)):
            out.append(f"{r.dir.name}: completed without a test or validation error")
    return out


def report(sweep_dir: Path, out_dir: Path | None = None) -> Path:
    """Write table.md, table.csv, curves.png and gradients.png to `out_dir`
    (default `<sweep dir>/report`); returns `out_dir`."""
    runs = load_runs(sweep_dir)
    out_dir = out_dir or sweep_dir / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = table_rows(runs)
    issues = problems(runs)
    text = markdown_table(rows) + weights_note(runs)
    if any(r.config.get("paper_error") for r in runs) and not any(r.official_data for r in runs):
        folders = any("format" in r.config.get("data", {}) for r in runs)
        why = (
            "ImageNet as a folder of JPEGs, which has no official checksum (data.format="
            "ilsvrc2012 reads the official archives, md5-checked)"
            if folders
            else "data that did not pass the official md5 check (data.verify_md5=false)"
        )
        text += (
            f"\nThe paper's column is left out: these runs read {why}, so the paper's errors "
            "do not compare.\n"
        )
    if issues:
        text += "\nNot in the table:\n\n" + "".join(f"- {line}\n" for line in issues)
    (out_dir / "table.md").write_text(text)
    write_csv(rows, out_dir / "table.csv")
    for name, fig in (("curves", plot_curves(runs)), ("gradients", plot_gradients(runs))):
        fig.savefig(out_dir / f"{name}.png", dpi=120)
    print(text)
    print(f"report of {len(runs)} runs ({len(issues)} not in the table) written to {out_dir}")
    return out_dir


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="reslab-report", description=__doc__)
    parser.add_argument("sweep_dir", type=Path, help="a multirun dir: logs/train/multiruns/<time>")
    parser.add_argument("--out", type=Path, default=None, help="default: <sweep_dir>/report")
    return parser.parse_args(argv)


@one_line_errors
def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    report(args.sweep_dir, args.out)


if __name__ == "__main__":
    main(sys.argv[1:])
