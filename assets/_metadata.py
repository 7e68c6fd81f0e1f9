"""Small helpers that turn results into Dagster metadata a user can read at a glance in the UI."""


import ast
import base64
import hashlib
import io
from pathlib import Path

import pandas as pd
from dagster import MetadataValue


MODELS = Path(__file__).resolve().parents[1] / "models"


def code_version(asset_module_file: str, models_root: Path = MODELS) -> str:
    """The code version of the assets in one asset module: sha256 of the module's source and of every ``models``
    package it imports (``from models.rl.x import y`` covers models/rl/**.py), so Dagster marks the assets stale
    when the library code their behaviour lives in changes, not only when someone remembers to bump a number."""
    path = Path(asset_module_file).resolve()
    packages = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "models":
            packages.add(node.module.split(".")[1] if "." in node.module else "")
    files = {path}
    for name in packages:
        target = models_root / name
        files |= set(target.rglob("*.py")) if target.is_dir() else {target.with_suffix(".py")}
    digest = hashlib.sha256()
    for file in sorted(files):
        digest.update(file.name.encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:12]


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub-style markdown table (no tabulate dependency)."""

    def cell(value) -> str:
        if isinstance(value, float):
            return format(value, floatfmt)
        return str(value).replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(map(str, frame.columns)) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def md(frame: pd.DataFrame, floatfmt: str = ".4g") -> MetadataValue:
    return MetadataValue.md(markdown_table(frame, floatfmt))


def frame_preview(frame: pd.DataFrame, rows: int = 5) -> MetadataValue:
    return md(frame.head(rows))


def png_markdown(figure) -> MetadataValue:
    """Embed a matplotlib figure as an inline PNG in markdown metadata (shows in the asset's page)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return MetadataValue.md(f"![plot](data:image/png;base64,{encoded})")


def bar_chart(table: pd.DataFrame, metrics: tuple[str, ...] = ("hr@10", "ndcg@10"), title: str = "") -> MetadataValue:
    """Grouped bars of ``table`` (columns ``model``, ``group``, metrics): one panel per metric, one bar per model
    in each group (scenario or overall)."""
    import numpy as np

    plt = pyplot()
    groups = list(dict.fromkeys(table["group"]))
    models = list(dict.fromkeys(table["model"]))
    figure, axes = plt.subplots(1, len(metrics), figsize=(4.5 * len(metrics), 3.0), squeeze=False)
    width = 0.8 / max(len(models), 1)
    x = np.arange(len(groups))
    for axis, metric in zip(axes[0], metrics):
        values = table.pivot_table(index="group", columns="model", values=metric).reindex(index=groups, columns=models)
        for j, model in enumerate(models):
            axis.bar(x + (j - (len(models) - 1) / 2) * width, values[model].to_numpy(), width, label=model)
        axis.set_xticks(x, groups, rotation=30, ha="right", fontsize=7)
        axis.set_title(f"{title} {metric}".strip(), fontsize=9)
    axes[0][0].legend(fontsize=6)
    figure.tight_layout()
    return png_markdown(figure)


def pyplot():
    """matplotlib.pyplot with the non-interactive backend (figures only become PNGs in metadata)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def line_panels(rows: list[dict], panels: dict[str, tuple[str, ...]], x: str = "epoch") -> MetadataValue:
    """One panel per ``panels`` entry (title -> the row keys drawn in it), x = ``row[x]`` (else the row index);
    keys a history never has are skipped."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 2.8), squeeze=False)
    xs = [r.get(x, i) for i, r in enumerate(rows)]
    for axis, (title, keys) in zip(axes[0], panels.items()):
        for key in keys:
            values = [r.get(key) for r in rows]
            if any(v is not None for v in values):
                axis.plot(xs, values, marker=".", label=key)
        axis.set_title(title, fontsize=9), axis.set_xlabel(x), axis.legend(fontsize=7)
    figure.tight_layout()
    return png_markdown(figure)


def errorbar_panels(summary: pd.DataFrame, x: str, series: str, panels: dict[str, tuple[str, float]],
                    path=None) -> MetadataValue:
    """One panel per ``panels`` entry (title -> (metric, reference line)): ``<metric>_mean`` +- ``<metric>_std``
    against ``x``, one line per value of ``series``; also saved to ``path`` if given."""
    plt = pyplot()
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3), squeeze=False)
    for axis, (title, (metric, reference)) in zip(axes[0], panels.items()):
        for name, part in summary.groupby(series, sort=False):
            axis.errorbar(part[x], part[f"{metric}_mean"], part[f"{metric}_std"], marker="o", capsize=3, label=name)
        axis.axhline(reference, color="grey", ls="--", label="reference")
        axis.set_title(title, fontsize=9), axis.set_xlabel(x), axis.legend(fontsize=7)
    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=90, bbox_inches="tight")
    return png_markdown(figure)
