"""The results of :func:`~urbangeo.downstream.predict.evaluate` and ``transfer``: metrics with
their n and spread, the below-baseline flags, the text table and the per-region predictions.

Model names: ``mlp`` and ``ridge`` are the heads on the embeddings given; ``<baseline>:<head>``
the same head on a baseline encoder's embeddings (``random:mlp``, ``image-stats:ridge``);
``coords_knn`` the k-NN on region coordinates alone; ``train_mean`` the training regions' mean.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from urbangeo.downstream.metrics import METRICS
from urbangeo.errors import InputError

HEADS = ("mlp", "ridge")
MODEL_LABELS = {
    "mlp": "MLP head (embedding)",
    "ridge": "ridge (embedding)",
    "coords_knn": "k-NN on x/y only",
    "train_mean": "training mean",
}
HEAD_LABELS = {"mlp": "MLP head", "ridge": "ridge"}
FEATURE_LABELS = {"random": "random encoder", "image-stats": "image stats"}
#: Split labels of a seed's regions in the predictions layer.
SET_NAMES = ("train", "val", "test")
#: Labels of the ensemble's regions (split scheme), and of regions without ground truth.
TESTED, NEVER_TESTED, NO_TARGET = "test", "never-tested", "no-target"
#: The marker of a score below the mean baseline in the table.
BELOW = "BELOW MEAN"


def model_label(model: str) -> str:
    """A model's name in the table: ``ridge (random encoder)`` for ``random:ridge``."""
    if model in MODEL_LABELS:
        return MODEL_LABELS[model]
    features, _, head = model.partition(":")
    return f"{HEAD_LABELS.get(head, head)} ({FEATURE_LABELS.get(features, features)})"


@dataclass
class TargetResult:
    """Everything measured for one indicator.

    ``scheme``: ``split`` (one train/val/test split per seed: ``sets`` holds 0 train, 1 val,
    2 test), ``kfold`` (one row per repeat: ``sets`` holds each region's test fold, 0-based, and
    ``predictions`` its out-of-fold prediction) or ``transfer`` (``sets`` 2: the test city).
    ``-1``: no valid target.
    """

    name: str
    n_regions: int
    #: (train, val, test) regions of every fitted model (per seed; per repeat × fold)
    sizes: list[tuple[int, int, int]]
    #: model -> metric -> {"mean", "std", "values", "n"}
    metrics: dict[str, dict[str, dict]]
    #: model -> (rows × regions) predictions in model units (ln(1+y) unless log=False)
    predictions: dict[str, np.ndarray] = field(repr=False)
    #: (rows × regions), see the class docstring
    sets: np.ndarray = field(repr=False)
    #: model -> choice of every fitted model (MLP best epoch, ridge alpha, k of k-NN)
    chosen: dict[str, list[float]] = field(default_factory=dict)
    scheme: str = "split"
    #: the seed of each row of ``predictions`` and ``sets``
    seeds: list[int] = field(default_factory=list)
    folds: int = 0
    #: model -> whether its mean R² is below the mean baseline (see metrics.is_below_baseline)
    below_baseline: dict[str, bool] = field(default_factory=dict)

    @property
    def test_sizes(self) -> list[int]:
        """Test regions of every fitted model."""
        return [s[2] for s in self.sizes]

    @property
    def n_tested(self) -> int:
        """Regions that some model was tested on (out-of-fold: every region with a value)."""
        if self.scheme == "kfold":
            return int((self.sets[0] >= 0).sum())
        return int((self.sets == 2).any(axis=0).sum())

    def n_test(self) -> dict:
        """Test regions per fold or split, and in all."""
        key = "per_fold" if self.scheme == "kfold" else "per_split"
        return {key: self.test_sizes, "total": self.n_tested}

    def protocol_text(self) -> str:
        """``5-fold × 3``, ``6:2:2 × 5`` or ``transfer × 5``."""
        rows = len(self.seeds)
        if self.scheme == "kfold":
            return f"{self.folds}-fold × {rows}"
        return f"{'6:2:2' if self.scheme == 'split' else 'transfer'} × {rows}"

    def n_text(self) -> str:
        """``12/fold, 60 OOF`` or ``24/split, 85 tested``."""
        sizes = self.test_sizes
        low, high = min(sizes), max(sizes)
        each = str(low) if low == high else f"{low}-{high}"
        if self.scheme == "kfold":
            return f"{each}/fold, {self.n_tested} OOF"
        return f"{each}/split, {self.n_tested} tested"


@dataclass
class PredictionReport:
    """Results of :func:`~urbangeo.downstream.predict.evaluate` or ``transfer``."""

    protocol: dict
    targets: dict[str, TargetResult]
    region_ids: pd.Index
    observed: pd.DataFrame

    def below_baseline(self, model: str) -> list[str]:
        """The targets on which ``model`` scores below the mean baseline."""
        return [n for n, r in self.targets.items() if r.below_baseline.get(model, False)]

    def to_dict(self) -> dict:
        """A JSON-serialisable summary (no per-region predictions)."""
        targets = {}
        for name, r in self.targets.items():
            targets[name] = {
                "scheme": r.scheme,
                "n_regions": r.n_regions,
                "n_test": r.n_test(),
                "sizes": [dict(zip(("train", "val", "test"), s, strict=True)) for s in r.sizes],
                "metrics": r.metrics,
                "below_baseline": r.below_baseline,
                "chosen": r.chosen,
            }
            if r.scheme == "kfold":
                targets[name].update(folds=r.folds, repeats=len(r.seeds))
        return {"protocol": self.protocol, "targets": targets}

    def table(self) -> str:
        """The results as a plain-text table: mean ± std over seeds or repeats, n per target."""
        unit = "ln(1+y)" if self.protocol.get("log", True) else "y"
        w = max([12, *(len(name) for name in self.targets)])
        models = {m for r in self.targets.values() for m in r.metrics}
        lw = max([22, *(len(model_label(m)) for m in models)])
        pw = max([10, *(len(r.protocol_text()) for r in self.targets.values())])
        nw = max([16, *(len(r.n_text()) for r in self.targets.values())])
        head = (
            f"{'target':<{w}} {'n':>6}  {'protocol':<{pw}}  {'test n':<{nw}}  "
            f"{'model':<{lw}} {'R²':>15} {'RMSE':>15} {'MAE':>15}"
        )
        lines = [
            f"{self.protocol['kind']}: test metrics in {unit}, mean ± std over seeds (6:2:2) "
            "or repeats (k-fold: metrics of the pooled out-of-fold predictions)",
            f"{BELOW}: R² < 0, below the mean baseline (worse than predicting the mean)",
            head,
            "-" * (len(head) + len(BELOW) + 2),
        ]
        for name, r in self.targets.items():
            for i, (model, values) in enumerate(r.metrics.items()):
                cells = [f"{values[m]['mean']:.3f} ± {values[m]['std']:.3f}" for m in METRICS]
                if i == 0:
                    first = (
                        f"{name:<{w}} {r.n_regions:>6}  {r.protocol_text():<{pw}}  "
                        f"{r.n_text():<{nw}}"
                    )
                else:
                    first = " " * (w + 7 + 2 + pw + 2 + nw)
                flag = f"  {BELOW}" if r.below_baseline.get(model) else ""
                row = f"{first}  {model_label(model):<{lw}} " + " ".join(f"{c:>15}" for c in cells)
                lines.append(row + flag)
        return "\n".join(lines)

    def prediction_frame(self, *, model: str = "mlp", seed: int | None = None) -> pd.DataFrame:
        """Per region and target: observed, out-of-fold predicted, residual and its source.

        ``seed=None`` (the ensemble): k-fold, the mean of the region's out-of-fold predictions
        over the repeats, ``{t}_split`` the fold of each repeat (``fold 2/5/1``); 6:2:2 splits,
        the mean of the predictions of the seeds that tested the region (``{t}_split`` ``test``),
        or of every seed's model for a region no seed tested (``never-tested``: in-sample for
        some). ``{t}_test_seeds`` counts the seeds (repeats) that tested the region. A seed
        gives that seed's (repeat's) predictions and ``{t}_split`` train, val, test, or
        ``fold k``. Regions without ground truth are ``no-target`` (predicted by models that
        never saw them). Observed and predicted are in the indicator's own units; the residual
        (predicted − observed) is in model units, ln(1 + y) unless log=False.
        """
        log = self.protocol.get("log", True)
        out = pd.DataFrame(index=self.region_ids)
        for name, r in self.targets.items():
            if model not in r.predictions:
                raise InputError(
                    f"No predictions of model {model!r} (models: {', '.join(r.predictions)})."
                )
            pred, label, tested = _oof(r, r.predictions[model], seed)
            observed = self.observed[name].to_numpy(dtype=np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                obs_model = np.log1p(observed) if log else observed
            out[f"{name}_observed"] = observed
            out[f"{name}_predicted"] = np.expm1(pred) if log else pred
            out[f"{name}_residual"] = pred - obs_model
            out[f"{name}_split"] = label
            if tested is not None:
                out[f"{name}_test_seeds"] = tested
        return out


def _oof(
    r: TargetResult, preds: np.ndarray, seed: int | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Predictions, their source labels and (ensemble) test counts of one target."""
    has_value = r.sets[0] >= 0
    if seed is not None:
        if seed not in r.seeds:
            raise InputError(
                f"Seed {seed} was not run (seeds: {r.seeds}).",
                hint="Choose one of the seeds, or the ensemble.",
            )
        row = r.seeds.index(seed)
        sets = r.sets[row]
        if r.scheme == "kfold":
            label = np.array([f"fold {k + 1}" for k in sets], dtype=object)
        else:
            label = np.array(["", *SET_NAMES], dtype=object)[sets + 1]
        label[~has_value] = NO_TARGET
        return preds[row], label, None
    if r.scheme == "kfold":
        pred = preds.mean(axis=0)
        label = np.array(
            ["fold " + "/".join(str(k + 1) for k in col) for col in r.sets.T], dtype=object
        )
        tested = np.where(has_value, len(r.seeds), 0)
    else:
        in_test = r.sets == 2
        tested = in_test.sum(axis=0)
        oof = (preds * in_test).sum(axis=0) / np.maximum(tested, 1)
        pred = np.where(tested > 0, oof, preds.mean(axis=0))
        label = np.where(tested > 0, TESTED, NEVER_TESTED).astype(object)
    label[~has_value] = NO_TARGET
    return pred, label, tested


def below_baseline_targets(data: Mapping[str, Any] | None) -> set[str]:
    """Targets whose layer model scores below the mean baseline in a run's metrics.json
    (``data``, as read; None: the run has none)."""
    if not data:
        return set()
    model = data.get("protocol", {}).get("layer_model", "mlp")
    return {
        name
        for name, target in data.get("targets", {}).items()
        if target.get("below_baseline", {}).get(model, False)
    }
