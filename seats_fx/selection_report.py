"""What one pruned prefill kept, as tables and plots: tokens per (window, modality) after every stage and
tokens per decoder layer. Used by `seats-fx run` (the stage table) and `seats-fx report` (PNGs + Markdown)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from seats_fx.models.layout import TEXT, TokenLayout
from seats_fx.ops.budget import AUDIO, VIDEO
from seats_fx.runtime import SeatsStats

MEDIA = {"video": VIDEO, "audio": AUDIO}


@dataclass(frozen=True)
class StageRow:
    label: str  # "input", "stage1 before LLM", "stage2 after layer 16", ...
    counts: dict[str, int]  # text / video / audio tokens kept
    per_window: dict[str, np.ndarray]  # video / audio -> tokens kept in each window


def stage_place(after_layer: int) -> str:
    """Where a stage acted: "before LLM" (stage 1) or "after layer N"."""
    return "before LLM" if after_layer == 0 else f"after layer {after_layer}"


def stage_rows(stats: SeatsStats, layout: TokenLayout, sample: int = 0) -> list[StageRow]:
    """Returns the input and every stage of `sample`: counts per modality and per (window, modality)."""
    if not stats.pruned:
        raise ValueError(f"the prefill was not pruned: {stats.skipped}")
    windows = max(layout.num_windows(sample), 1)
    modality, window = layout.modality[sample], layout.window[sample]
    valid = layout.valid[sample].bool()

    def row(label: str, positions: torch.Tensor) -> StageRow:
        positions = positions[positions >= 0]  # -1 fills a batch sample up
        kept_modality, kept_window = modality[positions], window[positions]
        counts = {"text": int((kept_modality == TEXT).sum())}
        per_window = {}
        for name, code in MEDIA.items():
            in_modality = kept_modality == code
            counts[name] = int(in_modality.sum())
            per_window[name] = np.bincount(kept_window[in_modality].cpu().numpy(), minlength=windows)[:windows]
        return StageRow(label, counts, per_window)

    rows = [row("input", torch.nonzero(valid).flatten())]
    for (stage, after_layer, _), positions in zip(stats.stages, stats.stage_positions):
        rows.append(row(f"{stage} {stage_place(after_layer)}", positions[sample]))
    return rows


def stage_table(rows: list[StageRow]) -> str:
    """A fixed-width table of the rows' counts (the CLI's kept-token summary)."""
    lines = [f"{'stage':<26} {'text':>6} {'video':>6} {'audio':>6}"]
    lines += [f"{r.label:<26} {r.counts['text']:>6} {r.counts['video']:>6} {r.counts['audio']:>6}" for r in rows]
    return "\n".join(lines)


def markdown_summary(rows: list[StageRow], stats: SeatsStats, header: dict[str, str]) -> str:
    """A Markdown report: the run's facts, the stage table, tokens per window, tokens per layer."""
    lines = ["# seats selection report", ""]
    lines += [f"- **{key}**: {value}" for key, value in header.items()]
    lines += ["", "## Tokens kept per stage", "", "| stage | text | video | audio |", "|---|---|---|---|"]
    lines += [f"| {r.label} | {r.counts['text']} | {r.counts['video']} | {r.counts['audio']} |" for r in rows]
    windows = len(rows[0].per_window["video"])
    lines += ["", f"## Media tokens per window (video / audio), {windows} windows", "",
              "| stage | " + " | ".join(f"w{w}" for w in range(windows)) + " |",
              "|---|" + "---|" * windows]
    for r in rows:
        cells = [f"{r.per_window['video'][w]} / {r.per_window['audio'][w]}" for w in range(windows)]
        lines.append(f"| {r.label} | " + " | ".join(cells) + " |")
    lines += ["", "## Tokens each decoder layer processed", "", "| layer | text | video | audio | total |",
              "|---|---|---|---|---|"]
    lines += [f"| {i} | {c['text']} | {c['video']} | {c['audio']} | {sum(c.values())} |"
              for i, c in enumerate(stats.layer_counts)]
    lines += ["", f"Layer-averaged share of the input processed: video {stats.mean_fraction('video'):.3f}, "
              f"audio {stats.mean_fraction('audio'):.3f}.", "",
              "![kept tokens per window](kept_per_window.png)", "", "![tokens per layer](tokens_per_layer.png)", ""]
    return "\n".join(lines)


def plot_kept_per_window(rows: list[StageRow], path: Path) -> Path:
    """Heatmaps (stage x window) of the video and of the audio tokens kept, counts written in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    windows = len(rows[0].per_window["video"])
    figure, axes = plt.subplots(1, 2, figsize=(max(8, 1.2 + 0.9 * windows * 2), 1.2 + 0.5 * len(rows)),
                                constrained_layout=True)
    for axis, name in zip(axes, MEDIA):
        grid = np.stack([r.per_window[name] for r in rows])
        axis.imshow(grid, aspect="auto", cmap="viridis")
        axis.set_title(f"{name} tokens kept per window")
        axis.set_xticks(range(windows), [f"w{w}" for w in range(windows)])
        axis.set_yticks(range(len(rows)), [r.label for r in rows])
        for (i, j), value in np.ndenumerate(grid):
            axis.text(j, i, str(value), ha="center", va="center", fontsize=8,
                      color="white" if value < grid.max() / 2 else "black")
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def plot_tokens_per_layer(stats: SeatsStats, path: Path) -> Path:
    """Stacked bars: text, video and audio tokens each decoder layer processed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = np.arange(len(stats.layer_counts))
    figure, axis = plt.subplots(figsize=(max(6, 0.3 * len(layers) + 2), 4), constrained_layout=True)
    bottom = np.zeros(len(layers))
    for name, color in (("text", "#7f7f7f"), ("video", "#1f77b4"), ("audio", "#ff7f0e")):
        values = np.array([c[name] for c in stats.layer_counts], dtype=float)
        axis.bar(layers, values, bottom=bottom, label=name, color=color)
        bottom += values
    axis.set_xlabel("decoder layer")
    axis.set_ylabel("tokens processed")
    axis.set_title("tokens per decoder layer")
    axis.legend()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def write_report(out_dir: str | Path, stats: SeatsStats, layout: TokenLayout, header: dict[str, str]) -> dict:
    """Writes kept_per_window.png, tokens_per_layer.png and summary.md into `out_dir`; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = stage_rows(stats, layout)
    paths = {"kept_per_window": plot_kept_per_window(rows, out_dir / "kept_per_window.png"),
             "tokens_per_layer": plot_tokens_per_layer(stats, out_dir / "tokens_per_layer.png"),
             "summary": out_dir / "summary.md"}
    paths["summary"].write_text(markdown_summary(rows, stats, header))
    return paths
