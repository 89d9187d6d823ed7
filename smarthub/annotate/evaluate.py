"""How good were the pre-annotations? Predicted Labelme files against the corrected (truth) ones.

mAP50 and mAP50-95 come from faster-coco-eval (COCO's own algorithm). Precision and recall per
label are those of the boxes actually written (an operating point, not a curve): a greedy match by
descending score at IoU >= 0.5 within each label, the same matching rule COCO uses.

Correction effort: what a person does to each box of a pre-annotated image, and the time it costs.
Boxes are paired across labels, highest IoU first; a pair at IoU >= 0.7 with the right label is a
glance (*verify*), at 0.5 <= IoU < 0.7 a drag of its edges (*adjust*), a pair at IoU >= 0.5 with the wrong
label is a *relabel* (plus an adjust when also loose), an unpaired prediction a *delete* and an unpaired
truth box a *draw*. Priced per action (ActionCosts) beside drawing every truth box by hand:
- draw 7.0 s: extreme clicking, 7.0 s per box (Papadopoulos, Uijlings, Keller, Ferrari, "Extreme clicking
  for efficient object annotation", ICCV 2017); careful boxes with a quality check cost 25-42 s (Su, Deng,
  Fei-Fei, "Crowdsourcing annotations for visual object detection", AAAI-W 2012), so 7 s favours drawing;
- verify 1.6 s: a yes/no check of one box (Papadopoulos, Uijlings, Keller, Ferrari, "We don't need no
  bounding-boxes: training object class detectors using only human verification", CVPR 2016: 1.6 s);
- delete and relabel 1.6 s: one glance and one click or pick, priced as a verification;
- adjust 3.5 s: dragging one or two edges, half a box drawn.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from smarthub.annotate.detset import ShapeTally
from smarthub.annotate.labelme import edit_state, load_labelme, shape_boxes
from smarthub.errors import AnnotationError, DatasetError, SmartHubError

MATCH_IOU = 0.5          # a prediction counts as found at IoU >= 0.5 (precision/recall, mAP50)
VERIFY_IOU = 0.7         # correction effort: a box this close to the truth is accepted with one glance
ADJUST_IOU = 0.5         # ... from here up to VERIFY_IOU its edges are dragged; below it is deleted and redrawn
ACTIONS = ("verify", "adjust", "relabel", "delete", "draw")
ACTION_WORDS = {"verify": "verify (IoU >= 0.7, right label: one glance)",
                "adjust": "adjust (IoU 0.5-0.7: drag the edges)",
                "relabel": "relabel (IoU >= 0.5, wrong label)",
                "delete": "delete (a box on nothing)",
                "draw": "draw (an object without a box)"}

Box = tuple[str, tuple[float, float, float, float], float | None]


@dataclass
class LabelStats:
    """Per-label figures at IoU 0.5 (precision/recall of the written boxes) and COCO AP."""

    label: str
    truth: int = 0
    predicted: int = 0
    true_positives: int = 0
    ap50: float | None = None
    ap50_95: float | None = None

    @property
    def precision(self) -> float | None:
        return self.true_positives / self.predicted if self.predicted else None

    @property
    def recall(self) -> float | None:
        return self.true_positives / self.truth if self.truth else None


@dataclass(frozen=True)
class ActionCosts:
    """Seconds a person spends per action (sources in the module docstring)."""

    draw_s: float = 7.0
    verify_s: float = 1.6
    adjust_s: float = 3.5
    relabel_s: float = 1.6
    delete_s: float = 1.6

    def __post_init__(self) -> None:
        if any(not (v >= 0 and math.isfinite(v)) for v in asdict(self).values()):
            raise SmartHubError(f"action costs must be finite seconds >= 0, got {asdict(self)}")


DEFAULT_COSTS = ActionCosts()


@dataclass
class CorrectionEffort:
    """What a person does to the boxes of pre-annotated images, and what drawing them all would be.

    verify/adjust/relabel/delete/draw count actions; `truth` is the boxes a person would draw by hand.
    A loose box with a wrong label is one relabel and one adjust.
    """

    verify: int = 0
    adjust: int = 0
    relabel: int = 0
    delete: int = 0
    draw: int = 0
    truth: int = 0

    def __add__(self, other: CorrectionEffort) -> CorrectionEffort:
        return CorrectionEffort(**{k: getattr(self, k) + getattr(other, k) for k in (*ACTIONS, "truth")})

    @property
    def edits(self) -> int:
        """Boxes a person changes (everything but a glance)."""
        return self.adjust + self.relabel + self.delete + self.draw

    def seconds(self, costs: ActionCosts = DEFAULT_COSTS) -> float:
        """Estimated time to correct the pre-annotations."""
        return (self.verify * costs.verify_s + self.adjust * costs.adjust_s + self.relabel * costs.relabel_s
                + self.delete * costs.delete_s + self.draw * costs.draw_s)

    def hand_seconds(self, costs: ActionCosts = DEFAULT_COSTS) -> float:
        """Estimated time to draw every truth box by hand."""
        return self.truth * costs.draw_s

    def ratio(self, costs: ActionCosts = DEFAULT_COSTS) -> float | None:
        """Correcting time ÷ drawing time (below 1: pre-annotation saves time); None without truth boxes."""
        hand = self.hand_seconds(costs)
        return self.seconds(costs) / hand if hand else None

    def to_json(self, costs: ActionCosts = DEFAULT_COSTS) -> dict:
        return {**{k: getattr(self, k) for k in ACTIONS}, "truth": self.truth, "edits": self.edits,
                "seconds": round(self.seconds(costs), 2), "hand_seconds": round(self.hand_seconds(costs), 2),
                "ratio": None if self.ratio(costs) is None else round(self.ratio(costs), 4),
                "costs_s": asdict(costs), "bands": {"verify_iou": VERIFY_IOU, "adjust_iou": ADJUST_IOU}}

    def summary(self, costs: ActionCosts = DEFAULT_COSTS) -> list[str]:
        """Lines: each action with its count and seconds, then the total beside drawing by hand."""
        per = {"verify": costs.verify_s, "adjust": costs.adjust_s, "relabel": costs.relabel_s,
               "delete": costs.delete_s, "draw": costs.draw_s}
        lines = ["correction effort (what a person does to each box):"]
        for k in ACTIONS:
            n = getattr(self, k)
            lines.append(f"  {ACTION_WORDS[k]:<46} {n:>5} x {per[k]:.1f} s = {n * per[k]:>7.1f} s")
        r = self.ratio(costs)
        lines.append(f"  estimated time {self.seconds(costs):.0f} s vs {self.hand_seconds(costs):.0f} s drawing all "
                     f"{self.truth} boxes by hand" + (f" ({r:.2f}x)" if r is not None else ""))
        return lines


@dataclass
class EvalReport:
    """Result of `evaluate_annotations`."""

    images: int = 0
    labels: dict[str, LabelStats] = field(default_factory=dict)
    map50: float | None = None
    map50_95: float | None = None
    effort: CorrectionEffort = field(default_factory=CorrectionEffort)
    missing_pred: list[Path] = field(default_factory=list)   # truth files with no prediction (counted as empty)
    unpaired_pred: list[Path] = field(default_factory=list)  # predictions with no truth (ignored)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    iou: float = MATCH_IOU
    warnings: list[str] = field(default_factory=list)
    costs: ActionCosts = DEFAULT_COSTS

    def to_json(self) -> dict:
        """Every figure as plain JSON (paths as strings, missing figures as null)."""
        return {"images": self.images, "iou": self.iou, "map50": self.map50, "map50_95": self.map50_95,
                "labels": {s.label: {"truth": s.truth, "predicted": s.predicted, "true_positives": s.true_positives,
                                     "precision": s.precision, "recall": s.recall, "ap50": s.ap50,
                                     "ap50_95": s.ap50_95} for s in self.labels.values()},
                "effort": self.effort.to_json(self.costs),
                "missing_pred": [str(p) for p in self.missing_pred],
                "unpaired_pred": [str(p) for p in self.unpaired_pred],
                "failed": [{"file": str(p), "reason": r} for p, r in self.failed], "warnings": list(self.warnings)}

    def summary(self) -> str:
        """A table per label and the overall figures."""
        def f(v: float | None) -> str:
            return "-" if v is None else f"{v:.3f}"

        at = f"@{self.iou:g}"
        lines = [f"{self.images} images compared; mAP50 {f(self.map50)}, mAP50-95 {f(self.map50_95)}",
                 f"{'label':<20} {'truth':>6} {'pred':>6} {'P' + at:>6} {'R' + at:>6} {'AP50':>6} {'AP50-95':>7}"]
        for s in self.labels.values():
            lines.append(f"{s.label:<20} {s.truth:>6} {s.predicted:>6} {f(s.precision):>6} {f(s.recall):>6} "
                         f"{f(s.ap50):>6} {f(s.ap50_95):>7}")
        lines += self.effort.summary(self.costs)
        if self.missing_pred:
            lines.append(f"{len(self.missing_pred)} truth files had no prediction (counted as no boxes)")
        if self.unpaired_pred:
            lines.append(f"{len(self.unpaired_pred)} prediction files had no truth (ignored)")
        lines += [f"failed  {p}: {r}" for p, r in self.failed]
        return "\n".join(lines)


# ------------------------------------------------------------------ pure parts


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a [N,4] against every box in b [M,4] (xyxy)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0, None) * np.clip(iy2 - iy1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def greedy_tp(pred: list[Box], truth: list[Box], *, iou: float = MATCH_IOU) -> int:
    """True positives of one label in one image: predictions by descending score, each to the best free truth."""
    if not pred or not truth:
        return 0
    order = sorted(range(len(pred)), key=lambda i: -(pred[i][2] if pred[i][2] is not None else 1.0))
    m = iou_matrix(np.array([pred[i][1] for i in order]), np.array([t[1] for t in truth]))
    free = np.ones(len(truth), dtype=bool)
    tp = 0
    for row in m:
        cand = np.where(free, row, -1.0)
        j = int(cand.argmax())
        if cand[j] >= iou:
            free[j] = False
            tp += 1
    return tp


def correction_effort(pred: list[Box], truth: list[Box]) -> CorrectionEffort:
    """What a person does to one image's predicted boxes to reach the truth (see the module docstring):
    pairs across labels, highest IoU first, at IoU >= ADJUST_IOU."""
    e = CorrectionEffort(truth=len(truth))
    m = iou_matrix(np.array([p[1] for p in pred]), np.array([t[1] for t in truth])) if pred and truth \
        else np.zeros((len(pred), len(truth)))
    pairs = sorted(((m[i, j], i, j) for i in range(len(pred)) for j in range(len(truth))
                    if m[i, j] >= ADJUST_IOU), reverse=True)
    used_p, used_t = set(), set()
    for v, i, j in pairs:
        if i in used_p or j in used_t:
            continue
        used_p.add(i)
        used_t.add(j)
        loose = bool(v < VERIFY_IOU)
        if pred[i][0] != truth[j][0]:
            e.relabel += 1
            e.adjust += loose
        elif loose:
            e.adjust += 1
        else:
            e.verify += 1
    e.delete = len(pred) - len(used_p)
    e.draw = len(truth) - len(used_t)
    return e


def coco_map(pairs: list[tuple[list[Box], list[Box], int, int]], labels: list[str]
             ) -> tuple[float | None, float | None, dict[str, tuple[float | None, float | None]]]:
    """(mAP50, mAP50-95, {label: (AP50, AP50-95)}) with faster-coco-eval; None where there is no truth."""
    from faster_coco_eval import COCO, COCOeval_faster

    cat = {lab: i + 1 for i, lab in enumerate(labels)}
    images, gts, dts = [], [], []
    for img_id, (pred, truth, w, h) in enumerate(pairs, start=1):
        images.append({"id": img_id, "width": w, "height": h})
        for lab, (x1, y1, x2, y2), _ in truth:
            gts.append({"id": len(gts) + 1, "image_id": img_id, "category_id": cat[lab], "iscrowd": 0,
                        "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1)})
        for lab, (x1, y1, x2, y2), score in pred:
            dts.append({"image_id": img_id, "category_id": cat[lab], "bbox": [x1, y1, x2 - x1, y2 - y1],
                        "score": 1.0 if score is None else score})
    if not gts:
        return None, None, {lab: (None, None) for lab in labels}
    if not dts:
        return 0.0, 0.0, {lab: ((0.0, 0.0) if any(g["category_id"] == cat[lab] for g in gts) else (None, None))
                          for lab in labels}
    coco_gt = COCO({"images": images, "annotations": gts,
                    "categories": [{"id": i, "name": lab} for lab, i in cat.items()]})
    coco_dt = coco_gt.loadRes(dts)
    ev = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=lambda *a, **k: None)
    ev.params.maxDets = [1, 10, max(100, max(len(p[0]) for p in pairs))]
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    precision = ev.eval["precision"]  # [T iou, R recall, K class, A area, M maxdets]
    per_label = {}
    for lab, cid in cat.items():
        k = cid - 1
        p50 = precision[0, :, k, 0, -1]
        pall = precision[:, :, k, 0, -1]
        per_label[lab] = (float(p50.mean()) if (p50 > -1).any() else None,
                          float(pall[pall > -1].mean()) if (pall > -1).any() else None)
    return _nan_none(ev.stats[1]), _nan_none(ev.stats[0]), per_label


def _nan_none(v: float) -> float | None:
    v = float(v)
    return None if math.isnan(v) or v < 0 else v


# ------------------------------------------------------------------ I/O edge


def _json_index(folder: Path) -> dict[str, Path]:
    return {p.relative_to(folder).with_suffix("").as_posix(): p for p in sorted(folder.rglob("*.json"))
            if not any(part.startswith(".") for part in p.relative_to(folder).parts)}


def folder_warnings(preds: list, truths: list) -> list[str]:
    """Warnings when the prediction files look like corrected truth (no score, no smarthub stamp on any)
    or every truth file is an untouched smarthub prediction (PRED and TRUTH probably swapped)."""
    out = []
    if preds and not any(p.stamp is not None or any(b[2] is not None for b in shape_boxes(p)) for p in preds):
        out.append("the prediction folder looks like ground truth (no box has a score and no file a smarthub "
                   "stamp): are PRED_DIR and TRUTH_DIR swapped?")
    if truths and all(edit_state(t) == "ours" for t in truths):
        out.append("the truth folder looks like predictions (every file is a smarthub pre-annotation nobody "
                   "corrected): are PRED_DIR and TRUTH_DIR swapped?")
    return out


def evaluate_annotations(pred_dir: Path, truth_dir: Path, *, iou: float = MATCH_IOU,
                         costs: ActionCosts = DEFAULT_COSTS) -> EvalReport:
    """Compare predicted Labelme files with corrected ones paired by relative path.

    Precision and recall count a prediction found at IoU >= `iou`; the correction effort is priced with
    `costs` (seconds per action).

    Raises DatasetError when a folder is missing or the truth folder has no Labelme files.
    Broken files are reported in `failed` and left out.
    """
    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    for d in (pred_dir, truth_dir):
        if not d.is_dir():
            raise DatasetError(f"folder not found: {d}")
    if not 0.0 < iou <= 1.0:
        raise SmartHubError(f"--iou must be in (0, 1], got {iou}")
    preds, truths = _json_index(pred_dir), _json_index(truth_dir)
    if not truths:
        raise DatasetError(f"no Labelme .json files under {truth_dir}")
    report = EvalReport(unpaired_pred=[preds[k] for k in sorted(set(preds) - set(truths))], iou=iou,
                        costs=costs)
    pairs: list[tuple[list[Box], list[Box], int, int]] = []
    loaded_p, loaded_t = [], []
    tally = ShapeTally()  # truth shapes that are not rectangles: said, not silently dropped
    for key, tpath in truths.items():
        try:
            t = load_labelme(tpath)
            p = load_labelme(preds[key]) if key in preds else None
        except AnnotationError as e:
            report.failed.append((tpath, str(e)))
            continue
        loaded_t.append(t)
        tally.add(tpath, t)
        if p is None:
            report.missing_pred.append(tpath)
        else:
            loaded_p.append(p)
        pairs.append((shape_boxes(p) if p else [], shape_boxes(t), t.image_width, t.image_height))
    report.images = len(pairs)
    labels = sorted({b[0] for pr, tr, _, _ in pairs for b in pr + tr})
    stats = {lab: LabelStats(lab) for lab in labels}
    for pred, truth, _, _ in pairs:
        for lab in labels:
            pl = [b for b in pred if b[0] == lab]
            tl = [b for b in truth if b[0] == lab]
            s = stats[lab]
            s.predicted += len(pl)
            s.truth += len(tl)
            s.true_positives += greedy_tp(pl, tl, iou=iou)
        report.effort = report.effort + correction_effort(pred, truth)
    report.map50, report.map50_95, per_label = coco_map(pairs, labels)
    for lab, (ap50, ap) in per_label.items():
        stats[lab].ap50, stats[lab].ap50_95 = ap50, ap
    report.labels = stats
    report.warnings = folder_warnings(loaded_p, loaded_t) + [f"truth: {n}" for n in tally.notes()]
    return report

