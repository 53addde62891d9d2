"""`--report DIR`: PNG plots (curves, confusion matrix, predicted vs true), Markdown and HTML."""

from __future__ import annotations

import contextlib
import html
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .common import atomic_output, fmt_number, require_matplotlib

#: The record of the files the last report wrote into its directory. The next report there
#: removes those it does not write again (an earlier classification run's confusion matrix
#: must not sit beside a regression run's plots) and never touches any other file.
MANIFEST = ".nnforge-report.json"


def _curves(plt: Any, out: Path, history: dict[str, list[float]],
            written: list[str]) -> list[tuple[str, str]]:
    """One PNG per tracked quantity (loss first), train and validation on the same axes."""
    from matplotlib.ticker import MaxNLocator  # noqa: PLC0415 - optional extra

    keys = [k for k in history if not k.startswith("val_") and k not in ("time", "lr")]
    keys.sort(key=lambda k: k != "loss")
    made = []
    for key in keys:
        fig, ax = plt.subplots(figsize=(6, 4))
        epochs = np.arange(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], marker="o", markersize=3, label=f"train {key}")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], marker="o", markersize=3,
                    label=f"validation {key}")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(key)
        ax.set_title(f"{key} per epoch")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        name = f"{key}.png"
        written.append(name)
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        made.append((f"{key} per epoch", name))
    return made


def _confusion_png(plt: Any, out: Path, matrix: np.ndarray, labels: Sequence[Any],
                   written: list[str]) -> str:
    k = len(matrix)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * k + 2), max(3.5, 0.5 * k + 1.5)))
    im = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(im, ax=ax)
    names = [str(v) for v in labels] if len(labels) == k else [str(i) for i in range(k)]
    ax.set_xticks(range(k), names, rotation=45 if max(map(len, names)) > 3 else 0)
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix")
    if k <= 20:  # counts stay readable up to about 20 classes
        top = matrix.max() if matrix.size else 0
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=8,
                        color="white" if matrix[i, j] > top / 2 else "black")
    fig.tight_layout()
    written.append("confusion_matrix.png")
    fig.savefig(out / "confusion_matrix.png", dpi=100)
    plt.close(fig)
    return "confusion_matrix.png"


def _scatter_png(plt: Any, out: Path, y_true: np.ndarray, y_pred: np.ndarray,
                 written: list[str]) -> str:
    t, p = np.asarray(y_true, np.float64).ravel(), np.asarray(y_pred, np.float64).ravel()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(t, p, s=8, alpha=0.6)
    lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
    ax.plot([lo, hi], [lo, hi], color="gray", linestyle="--", linewidth=1)
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title("predicted vs true")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    written.append("predicted_vs_true.png")
    fig.savefig(out / "predicted_vs_true.png", dpi=100)
    plt.close(fig)
    return "predicted_vs_true.png"


def _markdown(title: str, summary: list[tuple[str, str]], metrics: dict[str, Any],
              figures: list[tuple[str, str]], matrix: np.ndarray | None,
              labels: Sequence[Any] | None) -> str:
    lines = [f"# {title}", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in summary]
    if metrics:
        lines += ["", "## Test metrics", "", "| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {fmt_number(v)} |" for k, v in metrics.items()]
    if matrix is not None:
        names = [str(v) for v in (labels or range(len(matrix)))]
        lines += ["", "## Confusion matrix (rows: true, columns: predicted)", "",
                  "| | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        lines += [f"| **{n}** | " + " | ".join(str(int(c)) for c in row) + " |"
                  for n, row in zip(names, matrix)]
    for caption, name in figures:
        lines += ["", f"## {caption}", "", f"![{caption}]({name})"]
    return "\n".join(lines) + "\n"


def _html(title: str, summary: list[tuple[str, str]], metrics: dict[str, Any],
          figures: list[tuple[str, str]]) -> str:
    e = html.escape
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(str(v))}</td></tr>" for k, v in summary)
    mrows = "".join(f"<tr><th>{e(k)}</th><td>{e(fmt_number(v))}</td></tr>"
                    for k, v in metrics.items())
    figs = "".join(f"<figure><img src=\"{e(n)}\" alt=\"{e(c)}\"><figcaption>{e(c)}"
                   f"</figcaption></figure>" for c, n in figures)
    return ("<!doctype html><html><head><meta charset=\"utf-8\">"
            f"<title>{e(title)}</title><style>body{{font-family:sans-serif;margin:2em}}"
            "table{border-collapse:collapse;margin:1em 0}th,td{border:1px solid #ccc;"
            "padding:4px 10px;text-align:left}figure{display:inline-block;margin:1em}"
            "</style></head><body>"
            f"<h1>{e(title)}</h1><table>{rows}</table>"
            + (f"<h2>Test metrics</h2><table>{mrows}</table>" if metrics else "")
            + figs + "</body></html>\n")


def _is_report_name(name: Any) -> bool:
    """A name a report writes: a plain file name in the directory, never a path."""
    return isinstance(name, str) and name == Path(name).name and not name.startswith(".") \
        and "\\" not in name and (name in ("report.md", "report.html") or name.endswith(".png"))


def _recorded(out: Path) -> list[str]:
    """The files the manifest says an earlier report wrote (none for a missing or odd one)."""
    try:
        doc = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    files = doc.get("files") if isinstance(doc, dict) else None
    return [f for f in files if _is_report_name(f)] if isinstance(files, list) else []


def _record(out: Path, names: Sequence[str]) -> None:
    with atomic_output(out / MANIFEST, newline=None) as fh:
        json.dump({"written_by": "nnforge", "files": sorted(set(names))}, fh, indent=1)
        fh.write("\n")


def write_report(directory: str | Path, title: str, summary: list[tuple[str, str]],
                 metrics: dict[str, Any], history: dict[str, list[float]] | None,
                 matrix: np.ndarray | None = None, labels: Sequence[Any] | None = None,
                 pairs: tuple[np.ndarray, np.ndarray] | None = None) -> list[Path]:
    """Write the plots, report.md and report.html into directory; return the files written.

    Files an earlier report wrote there (see MANIFEST) and this one did not are removed, so
    the directory holds one run's report; other files in it are left alone.
    """
    plt = require_matplotlib()
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    earlier = _recorded(out)
    written: list[str] = []
    try:
        figures: list[tuple[str, str]] = []
        if history:
            figures += _curves(plt, out, history, written)
        if matrix is not None:
            figures.append(("confusion matrix",
                            _confusion_png(plt, out, matrix, labels or [], written)))
        elif pairs is not None and len(pairs[0]):
            figures.append(("predicted vs true", _scatter_png(plt, out, *pairs, written)))
        md = out / "report.md"
        written.append(md.name)
        md.write_text(_markdown(title, summary, metrics, figures, matrix, labels),
                      encoding="utf-8")
        page = out / "report.html"
        written.append(page.name)
        page.write_text(_html(title, summary, metrics, figures), encoding="utf-8")
    except BaseException:
        # keep every file either run wrote on record, so that the next report cleans them up
        with contextlib.suppress(OSError):
            _record(out, earlier + written)
        raise
    _record(out, written)
    for name in sorted(set(earlier) - set(written)):
        stale = out / name
        if stale.is_file() or stale.is_symlink():
            with contextlib.suppress(OSError):
                stale.unlink()
    return [out / name for _, name in figures] + [md, page]
