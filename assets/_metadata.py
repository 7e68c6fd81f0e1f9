"""Small helpers that turn results into Dagster metadata a user can read at a glance in the UI."""


import base64
import io

import pandas as pd
from dagster import MetadataValue


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

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
