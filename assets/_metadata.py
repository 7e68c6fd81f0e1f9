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
