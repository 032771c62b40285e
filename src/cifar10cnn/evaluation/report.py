"""`cifar10cnn report`: one self-contained HTML page (PNGs embedded) + the PNG files beside it.

Sections: summary · training curves · confusion matrix · per-class metrics with 95% intervals and
the most-confused pairs · galleries of right and wrong test images (and per class, on demand) ·
Grad-CAM of mistakes · calibration · settings, machine and versions.

Everything comes from the run folder plus one pass over the test set with the run's best weights.
"""

from __future__ import annotations

import csv
import html
import io
import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from ..config import load_run_config  # noqa: E402
from ..data.dataset import ImageDataset  # noqa: E402
from ..data.loading import load_dataset  # noqa: E402
from ..errors import UserError  # noqa: E402
from ..fileio import atomic_write, atomic_write_text  # noqa: E402
from ..inference import predict_logits, to_batch  # noqa: E402
from ..runs import headline, load_run_model, read_metrics  # noqa: E402
from .explain import grad_cam  # noqa: E402
from .metrics import calibration, confused_pairs, confusion_matrix, per_class_table, wilson_interval  # noqa: E402
from .page import ACCENT, BAD, CSS, GOOD, STYLE, TRAIN, VAL, html_table, img_tag, png_bytes  # noqa: E402

ZOOM = 3  # gallery tiles: 32×32 → 96×96, nearest neighbour


def _read_history(run_dir: Path) -> list[dict]:
    path = run_dir / "history.csv"
    if not path.is_file():
        raise UserError(f"{run_dir} has no history.csv; is it a finished run?")
    with path.open() as f:
        # --final runs have no validation columns: empty cells become NaN (not plotted)
        return [{k: float(v) if v != "" else float("nan") for k, v in row.items()} for row in csv.DictReader(f)]


# --- figures -------------------------------------------------------------------------------------


def plot_curves(history: list[dict], best_epoch: int, stopped_early: bool) -> bytes:
    ep = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, key, label in ((axes[0], "accuracy", "accuracy"), (axes[1], "loss", "loss")):
        ax.plot(ep, [h[f"train_{key}"] for h in history], "o-", color=TRAIN, ms=3, label=f"train {label}")
        ax.plot(ep, [h[f"val_{key}"] for h in history], "o-", color=VAL, ms=3, label=f"validation {label}")
        ax.axvline(best_epoch, color=ACCENT, ls="--", lw=1.5, label=f"best epoch ({best_epoch})")
        if stopped_early and ep:
            ax.axvspan(best_epoch, ep[-1], color=ACCENT, alpha=0.12, label="patience (early stopping)")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.set_title(f"{label} per epoch")
        ax.legend(fontsize=8)
    axes[0].yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    return png_bytes(fig)


def plot_confusion(cm: np.ndarray, classes: list[str]) -> bytes:
    """Counts and recall side by side; past 20 classes the cells are not annotated and the panels grow."""
    side = max(5.8, 0.14 * len(classes))
    fig, axes = plt.subplots(1, 2, figsize=(side * 2.3, side), gridspec_kw={"wspace": 0.08})
    tick_size = 8 if len(classes) <= 20 else max(3, 8 - len(classes) // 25)
    norm = cm / cm.sum(1, keepdims=True).clip(min=1)
    panels = ((axes[0], cm, "counts", "{:.0f}"), (axes[1], norm, "row-normalised (recall)", "{:.2f}"))
    for ax, mat, title, fmt in panels:
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.set_xticks(range(len(classes)), classes, rotation=45 if len(classes) <= 20 else 90,
                      ha="right" if len(classes) <= 20 else "center", fontsize=tick_size)
        ax.set_yticks(range(len(classes)), classes, fontsize=tick_size)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"confusion matrix: {title}")
        ax.grid(False)
        for i in range(len(classes) if len(classes) <= 20 else 0):
            for j in range(len(classes)):
                ax.text(j, i, fmt.format(mat[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    axes[1].set_yticks(range(len(classes)), [""] * len(classes))  # the left panel names the rows
    axes[1].set_ylabel("")
    fig.colorbar(im, ax=axes, fraction=0.025)
    return png_bytes(fig)


def plot_per_class(rows: list[dict]) -> bytes:
    fig, ax = plt.subplots(figsize=(max(11.0, 0.3 * len(rows)), 3.8))
    x = np.arange(len(rows))
    w = 0.27
    acc = np.array([r["accuracy"] for r in rows])
    err = np.array([[r["accuracy"] - r["ci_low"] for r in rows], [r["ci_high"] - r["accuracy"] for r in rows]])
    ax.bar(x - w, acc, w, yerr=err, capsize=3, color=TRAIN, label="accuracy (recall) ± 95% CI")
    ax.bar(x, [r["precision"] for r in rows], w, color=ACCENT, label="precision")
    ax.bar(x + w, [r["f1"] for r in rows], w, color=VAL, label="F1")
    ax.set_xticks(x, [r["class"] for r in rows], **({} if len(rows) <= 12 else {"rotation": 90, "fontsize": 7}))
    ax.set_ylim(max(0.0, acc.min() - 0.25), 1.0)
    ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_title("per-class metrics on the test set", pad=28)
    ax.legend(fontsize=8, ncol=3, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    return png_bytes(fig)


def plot_calibration(cal: dict) -> bytes:
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    bins = [b for b in cal["bins"] if b["count"]]
    centres = [(b["low"] + b["high"]) / 2 for b in bins]
    width = cal["bins"][0]["high"] - cal["bins"][0]["low"]
    axes[0].bar(centres, [b["accuracy"] for b in bins], width * 0.9, color=TRAIN, label="accuracy in bin")
    axes[0].plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    axes[0].plot(centres, [b["confidence"] for b in bins], "o", color=VAL, ms=4, label="mean confidence in bin")
    axes[0].set_xlabel("confidence (max probability)")
    axes[0].set_ylabel("accuracy")
    axes[0].set_title(f"reliability diagram (ECE {cal['ece']:.2%})")
    axes[0].legend(fontsize=8)
    axes[1].bar(centres, [b["count"] for b in bins], width * 0.9, color=ACCENT)
    axes[1].set_xlabel("confidence (max probability)")
    axes[1].set_ylabel("test images")
    axes[1].set_title("confidence histogram")
    return png_bytes(fig)


def plot_gallery(images: np.ndarray, captions: list[str], colors: list[str], title: str, cols: int = 10) -> bytes:
    rows = max(1, -(-len(images) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.25, rows * 1.55))
    for ax in np.atleast_1d(axes).ravel():
        ax.axis("off")
    for ax, img, cap, col in zip(np.atleast_1d(axes).ravel(), images, captions, colors, strict=False):
        ax.imshow(img, interpolation="nearest")
        ax.set_title(cap, fontsize=6.5, color=col)
    fig.suptitle(title, fontweight="bold")
    return png_bytes(fig)


def plot_gradcam(images: np.ndarray, cams: np.ndarray, captions: list[str]) -> bytes:
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(n * 1.3, 3.0), squeeze=False)
    for k in range(n):
        axes[0, k].imshow(images[k], interpolation="nearest")
        axes[0, k].set_title(captions[k], fontsize=6.5, color=BAD)
        axes[1, k].imshow(images[k], interpolation="nearest")
        axes[1, k].imshow(cams[k], cmap="jet", alpha=0.45, interpolation="bilinear", vmin=0, vmax=1)
        for r in (0, 1):
            axes[r, k].axis("off")
    fig.suptitle("Grad-CAM for the predicted class on mistakes (top: image, bottom: where the network looked)",
                 fontweight="bold", y=1.06)
    return png_bytes(fig)


# --- HTML --------------------------------------------------------------------------------------


def _tile(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    side = max(32 * ZOOM, img.shape[0])  # 32×32 tiles shown 3× (nearest neighbour); larger images as they are
    Image.fromarray(img).resize((side, side), Image.Resampling.NEAREST).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class TestPass:
    """One single-view pass over the test set with the run's best weights, and what the report reads from it."""
    images: np.ndarray  # N×32×32×3 uint8
    labels: torch.Tensor
    classes: list[str]
    probs: torch.Tensor
    conf: torch.Tensor
    pred: torch.Tensor
    cm: torch.Tensor
    rows: list[dict]  # per class: accuracy with its interval, precision, recall, F1
    wrong: torch.Tensor  # indices of mistakes, most confident first
    right: torch.Tensor

    @property
    def accuracy(self) -> float:
        return (self.pred == self.labels).double().mean().item()

    def captions(self, idx: torch.Tensor) -> list[str]:
        c, y, p, q = self.classes, self.labels, self.pred, self.conf
        return [f"{c[y[i]]}→{c[p[i]]}\n{q[i]:.1%}" if p[i] != y[i] else f"{c[y[i]]}\n{q[i]:.1%}" for i in idx.tolist()]


def test_pass(model, data: ImageDataset, runtime) -> TestPass:
    probs = predict_logits(model, data.test_x, runtime).softmax(1)
    conf, pred = probs.max(1)
    labels = data.test_y
    cm = confusion_matrix(pred, labels, len(data.classes))
    wrong = torch.nonzero(pred != labels).flatten()
    right = torch.nonzero(pred == labels).flatten()
    return TestPass(data.test_x.numpy(), labels, data.classes, probs, conf, pred, cm, per_class_table(cm, data.classes),
                    wrong[conf[wrong].argsort(descending=True)], right[conf[right].argsort(descending=True)])


def draw_figures(tp: TestPass, history: list[dict], metrics: dict, cal: dict, cams: tuple | None,
                 gallery_size: int) -> dict[str, bytes]:
    figures: dict[str, bytes] = {}
    with plt.rc_context(STYLE):
        figures["curves"] = plot_curves(history, int(metrics.get("best_epoch", 0)), bool(metrics.get("stopped_early")))
        figures["confusion"] = plot_confusion(tp.cm.numpy(), tp.classes)
        figures["per_class"] = plot_per_class(tp.rows)
        figures["calibration"] = plot_calibration(cal)
        g_wrong, g_right = tp.wrong[:gallery_size], tp.right[:gallery_size]
        figures["mistakes"] = plot_gallery(tp.images[g_wrong], tp.captions(g_wrong), [BAD] * len(g_wrong),
                                           "most confident mistakes (true→predicted, confidence)")
        figures["correct"] = plot_gallery(tp.images[g_right], tp.captions(g_right), [GOOD] * len(g_right),
                                          "most confident correct predictions")
        if cams is not None:
            sample, maps = cams
            figures["gradcam"] = plot_gradcam(tp.images[sample], maps.numpy(), tp.captions(sample))
    return figures


def per_class_galleries(tp: TestPass) -> str:
    """Per class, on demand (<details>): its most confident mistakes, then its most confident correct images."""
    parts = []
    for c, name in enumerate(tp.classes):
        c_wrong = tp.wrong[tp.labels[tp.wrong] == c][:12]
        c_right = tp.right[tp.labels[tp.right] == c][:12]
        tiles = "".join(
            f'<div class="tile">{img_tag(_tile(tp.images[i]), cap)}<div class="{cls}">{html.escape(cap)}</div></div>'
            for idx, cls in ((c_wrong, "bad"), (c_right, "good"))
            for i, cap in zip(idx.tolist(), tp.captions(idx), strict=True)
        )
        parts.append(f"<details><summary>{html.escape(name)}: {tp.rows[c]['accuracy']:.1%} correct — "
                     f"{len(c_wrong)} most confident mistakes, then {len(c_right)} most confident correct</summary>"
                     f'<div class="tiles">{tiles}</div></details>')
    return "".join(parts)


def summary_html(tp: TestPass, metrics: dict, cal: dict, cfg, config_doc: dict) -> str:
    """The key figures: test accuracy single view (this page's pass), and with TTA as `train` printed it."""
    rt, data_doc = config_doc.get("runtime", {}), config_doc.get("data", {})
    n_test = len(tp.labels)
    lo, hi = wilson_interval(int((tp.pred == tp.labels).sum()), n_test)
    if data_doc.get("val_images"):
        selection = (f"Trained on {data_doc.get('train_images', 0):,} images, model selection on "
                     f"{data_doc['val_images']:,} held-out training images (split seed {data_doc.get('split_seed')});")
        val_kpi = f"val accuracy {metrics.get('best_val_accuracy') or 0:.2%}"
    else:
        selection = (f"Trained on {data_doc.get('train_images', 0):,} images with fixed settings and no validation "
                     f"split (--final): the last epoch is the model;")
        val_kpi = "no validation split"
    tta_kpi = ""
    if metrics.get("test_accuracy_tta") is not None:
        figure, label = headline(metrics)
        tta_kpi = f"<div>test accuracy {html.escape(label)}<b>{figure:.2%}</b>what <code>train</code> printed</div>"
    if metrics.get("test_balanced_accuracy") is not None:  # imbalanced test classes (evaluation/metrics.py)
        tta_kpi += (f"<div>balanced accuracy (single view)<b>{metrics['test_balanced_accuracy']:.2%}</b>the mean of "
                    f"the per-class accuracies</div>")
    ranked = sorted(tp.rows, key=lambda r: -r["accuracy"])
    source = f"<p>Data set: <code>{html.escape(str(cfg.dataset))}</code>, {len(tp.classes)} classes.</p>"
    return source + f"""
<div class="kpi"><div>test accuracy (single view)<b>{tp.accuracy:.2%}</b>95% CI {lo:.2%}–{hi:.2%}</div>{tta_kpi}
<div>best epoch<b>{metrics.get('best_epoch')} / {metrics.get('epochs')}</b>
{val_kpi}</div>
<div>trainable parameters<b>{metrics.get('trainable_params', 0):,}</b>{html.escape(cfg.model)}</div>
<div>training time<b>{metrics.get('train_seconds', 0):.0f} s</b>{html.escape(str(rt.get('device_name')))}</div>
<div>calibration (ECE)<b>{cal['ece']:.2%}</b>mean confidence {cal['mean_confidence']:.1%}</div></div>
<p>{selection} the {n_test:,} test images were used only for evaluation. The figures on this page (per class,
confusion, galleries, calibration) are single-view: each test image seen once, as <code>predict</code> and
<code>serve</code> see it. Easiest classes: {', '.join(r['class'] for r in ranked[:2])}; hardest:
{', '.join(r['class'] for r in ranked[-2:])}.</p>"""


def settings_html(cfg, config_doc: dict) -> str:
    rt, code = config_doc.get("runtime", {}), config_doc.get("code", {})
    settings = [[k, json.dumps(v) if isinstance(v, (dict, list)) else v] for k, v in cfg.to_dict().items()]
    machine = [["device", f"{rt.get('device')} ({rt.get('device_name')})"], ["precision", rt.get("precision")],
               ["channels_last", rt.get("channels_last")], ["threads", rt.get("threads")],
               ["torch", rt.get("torch")], ["python", rt.get("python")], ["platform", rt.get("platform")],
               ["cifar10cnn", config_doc.get("cifar10cnn")],
               ["code commit", f"{code.get('commit')}{' (uncommitted changes)' if code.get('dirty') else ''}"
                if code else "not recorded"], ["created", config_doc.get("created")]]
    return ("<h3>Run config</h3>" + html_table(["setting", "value"], settings)
            + "<h3>Machine</h3>" + html_table(["", ""], machine))


def report_sections(tp: TestPass, figures: dict, metrics: dict, cal: dict, cfg, config_doc: dict) -> list[tuple]:
    """(id, title, HTML) of each section, in page order."""
    validated = config_doc.get("data", {}).get("val_images")
    pairs = confused_pairs(tp.cm, tp.classes)
    return [
        ("summary", "Summary", summary_html(tp, metrics, cal, cfg, config_doc)),
        ("curves", "Training curves", img_tag(figures["curves"], "training curves")
         + ("<p>The dashed line marks the best epoch by validation "
            + ("loss" if cfg.monitor == "val_loss" else "accuracy") + "; its weights are the ones evaluated. "
            if validated else "<p>No validation split: the last epoch's weights are evaluated. ")
         + (f"Training stopped early after {cfg.patience} epochs without improvement (shaded)."
            if metrics.get("stopped_early") else "Training ran all its epochs.") + "</p>"),
        ("confusion", "Confusion matrix", img_tag(figures["confusion"], "confusion matrix")),
        ("per-class", "Per-class metrics", img_tag(figures["per_class"], "per-class metrics") + html_table(
            ["class", "accuracy", "95% CI", "precision", "recall", "F1", "test images"],
            [[r["class"], f"{r['accuracy']:.1%}", f"{r['ci_low']:.1%}–{r['ci_high']:.1%}", f"{r['precision']:.1%}",
              f"{r['recall']:.1%}", f"{r['f1']:.3f}", r["support"]] for r in tp.rows])
         + "<p>Intervals: 95% Wilson score intervals for a binomial proportion.</p><h3>Most-confused pairs</h3>"
         + html_table(["pair", "first → second", "second → first", "total"],
                      [[f"{a} / {b}", p["a_as_b"], p["b_as_a"], p["total"]] for p in pairs for a, b in [p["pair"]]])),
        ("galleries", "Right and wrong", img_tag(figures["mistakes"], "mistakes")
         + img_tag(figures["correct"], "correct") + "<h3>Per class (click to open)</h3>" + per_class_galleries(tp)),
        ("gradcam", "Where the network looked (Grad-CAM)",
         img_tag(figures["gradcam"], "Grad-CAM") if "gradcam" in figures else "<p>No mistakes to explain.</p>"),
        ("calibration", "Calibration", img_tag(figures["calibration"], "calibration")
         + f"<p>Expected calibration error {cal['ece']:.2%} over 15 equal-width confidence bins: the average gap "
           f"between how sure the model is and how often it is right.</p>"),
        ("settings", "Settings, machine and versions", settings_html(cfg, config_doc)),
    ]


def build_report(run_dir: Path, out: Path | None = None, data: ImageDataset | None = None, data_dir=None,
                 cache_dir=None, gallery_size: int = 30, cam_count: int = 10) -> Path:
    run_dir = Path(run_dir)
    out = Path(out) if out else run_dir / "report.html"
    cfg, config_doc = load_run_config(run_dir)
    if not (run_dir / "metrics.json").is_file():
        raise UserError(f"{run_dir} has no metrics.json: the run is not finished "
                        f"(finish it with `train --resume` or run `cifar10cnn evaluate` on it)")
    metrics = read_metrics(run_dir)
    history = _read_history(run_dir)
    model, _, runtime = load_run_model(run_dir)
    data = data or load_dataset(cfg.dataset, data_dir, cache_dir, image_size=cfg.image_size)
    tp = test_pass(model, data, runtime)
    cal = calibration(tp.probs, tp.labels)
    sample = tp.wrong[torch.randperm(len(tp.wrong), generator=torch.Generator().manual_seed(0))[:cam_count]]
    cams = (sample, grad_cam(model, to_batch(data.test_x[sample], runtime).float(), tp.pred[sample])) \
        if len(sample) else None
    figures = draw_figures(tp, history, metrics, cal, cams, gallery_size)
    for name, png in figures.items():
        atomic_write(out.parent / f"{out.stem}_{name}.png", lambda tmp, png=png: Path(tmp).write_bytes(png))
    sections = report_sections(tp, figures, metrics, cal, cfg, config_doc)
    nav = "".join(f'<a href="#{sid}">{html.escape(title)}</a>' for sid, title, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{html.escape(title)}</h2>{content}</section>'
                   for sid, title, content in sections)
    page = (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>cifar10cnn report: "
            f"{html.escape(run_dir.name)}</title><style>{CSS}</style></head><body><h1>cifar10cnn report: "
            f"{html.escape(cfg.model)}</h1><p>run folder <code>{html.escape(str(run_dir))}</code></p><nav>{nav}</nav>"
            f"{body}</body></html>")
    atomic_write_text(out, page)
    return out
