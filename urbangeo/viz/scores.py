"""The offline map's "Scores" panel: per indicator the test R² of every model and feature set
that ``urbangeo predict`` compared (mean ± sd over the splits, from the run's ``metrics.json``),
the best in bold, those below the mean baseline greyed, and one line on the protocol.

The numbers are formatted here, so the page only places strings (with ``textContent``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path

from urbangeo.downstream.metrics import is_below_baseline
from urbangeo.errors import InputError
from urbangeo.viz.leaflet import control_template, data_element_class

#: Decimals of the R² shown.
DECIMALS = 3


def read_metrics(path: Path) -> dict | None:
    """A run's ``metrics.json``, or None when it has none."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(
            f"Cannot read {path} ({exc}).",
            hint="Run `urbangeo predict` again to rewrite it, or delete it.",
        ) from exc
    return data if isinstance(data, dict) else None


def _number(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _count(value) -> str:
    number = _number(value)
    return f"{int(number):,}" if number is not None else str(value)


def format_r2(mean: float | None, std: float | None) -> str:
    """``0.412 ± 0.031`` (``n/a`` without a mean; the mean alone without a spread)."""
    if mean is None:
        return "n/a"
    text = f"{mean:.{DECIMALS}f}"
    return text if std is None else f"{text} ± {std:.{DECIMALS}f}"


def _protocol_line(protocol: Mapping, schemes: set[str]) -> str:
    parts = [str(protocol.get("kind", "within-city"))]
    split = protocol.get("split")
    if protocol.get("kind") == "transfer":
        if split:
            parts.append(str(split))
    elif split:
        block = _number(protocol.get("block_size"))
        parts.append(f"{split} split" + (f" ({block:g} m blocks)" if block else ""))
    seeds = protocol.get("seeds") or []
    if "split" in schemes or "transfer" in schemes:
        ratios = protocol.get("ratios")
        ratio = ""
        if "split" in schemes and isinstance(ratios, list) and ratios:
            ratio = ":".join(f"{10 * r:g}" for r in ratios if _number(r) is not None) + " × "
        parts.append(f"{ratio}{len(seeds)} seed{'s' if len(seeds) != 1 else ''}")
    if "kfold" in schemes:
        repeats = protocol.get("repeats") or seeds
        parts.append(f"{protocol.get('folds', '?')}-fold × {len(repeats)} repeats")
    regions = protocol.get("regions")
    if isinstance(regions, Mapping):  # transfer: train_city, test_city
        parts.append(
            ", ".join(f"{str(k).replace('_', ' ')} {_count(v)} regions" for k, v in regions.items())
        )
    elif _number(regions) is not None:
        parts.append(f"{_count(regions)} regions")
    parts.append("test R², mean ± sd over the splits")
    return "; ".join(parts)


def _target_note(target: Mapping, protocol: Mapping) -> str:
    """``500 regions`` (``80 regions, 5-fold × 3`` under k-fold cross-validation)."""
    n = target.get("n_regions")
    parts = [f"{n:,} regions"] if isinstance(n, int) else []
    if target.get("scheme") == "kfold":
        repeats = target.get("repeats", len(protocol.get("repeats") or []))
        parts.append(f"{target.get('folds', protocol.get('folds', '?'))}-fold × {repeats}")
    return ", ".join(parts)


def scores_panel(metrics: Mapping | None) -> dict | None:
    """The panel's data from a ``metrics.json`` dict (None when it holds no R² to show).

    Models in ``protocol.models`` order (with its labels; models it does not name follow, by
    their own name). Per row: ``best`` (the highest mean R² of the target, ties included) and
    ``below`` (the target's ``below_baseline`` flag, else mean R² below max(0, the training
    mean's R²): :func:`urbangeo.downstream.metrics.is_below_baseline`).
    """
    if not metrics:
        return None
    protocol = metrics.get("protocol") or {}
    labels = protocol.get("models") or {}
    if not isinstance(labels, Mapping):
        labels = {}
    targets = []
    schemes: set[str] = set()
    for name, target in (metrics.get("targets") or {}).items():
        scores = target.get("metrics") if isinstance(target, Mapping) else None
        if not isinstance(scores, Mapping):
            continue
        order = [m for m in labels if m in scores] + [m for m in scores if m not in labels]
        values = {}
        for model in order:
            r2 = scores[model].get("r2") if isinstance(scores[model], Mapping) else None
            if isinstance(r2, Mapping):
                values[model] = (_number(r2.get("mean")), _number(r2.get("std")))
        if not values:
            continue
        schemes.add(str(target.get("scheme", "split")))
        means = [m for m, _ in values.values() if m is not None]
        best = max(means) if means else None
        mean_r2 = values.get("train_mean", (None, None))[0]
        flags = target.get("below_baseline") or {}
        rows = []
        for model, (mean, std) in values.items():
            if model in flags:
                below = bool(flags[model])
            else:
                below = mean is None or is_below_baseline(mean, mean_r2)
            rows.append(
                {
                    "model": str(model),
                    "label": str(labels.get(model, model)),
                    "r2": format_r2(mean, std),
                    "best": mean is not None and mean == best,
                    "below": below,
                }
            )
        targets.append({"name": str(name), "note": _target_note(target, protocol), "rows": rows})
    if not targets:
        return None
    return {"protocol": _protocol_line(protocol, schemes), "targets": targets}


_SCORES_TEMPLATE = control_template("""  var scores = data;
  var control = L.control({position: 'topleft'});
  function el(tag, cls, text, parent) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined) { node.textContent = text; }
    if (parent) { parent.appendChild(node); }
    return node;
  }
  control.onAdd = function () {
    var div = L.DomUtil.create('div', 'urbangeo-scores leaflet-bar');
    div.id = 'urbangeo-scores';
    var button = el('a', 'urbangeo-scores-button', 'Scores (R²)', div);
    button.href = '#';
    button.setAttribute('role', 'button');
    button.title = 'Test R² of every model and feature set';
    var box = el('div', 'urbangeo-scores-box', undefined, div);
    box.style.display = 'none';
    el('div', 'protocol', scores.protocol, box);
    scores.targets.forEach(function (target) {
      var head = el('div', 'title', target.name, box);
      if (target.note) { el('span', 'note', ' (' + target.note + ')', head); }
      var table = el('table', '', undefined, box);
      target.rows.forEach(function (row) {
        var tr = table.insertRow();
        tr.className = (row.best ? 'best' : '') + (row.below ? ' below' : '');
        tr.title = row.model;
        tr.insertCell().textContent = row.label;
        var value = tr.insertCell();
        value.className = 'r2';
        value.textContent = row.r2;
      });
    });
    L.DomEvent.on(button, 'click', function (e) {
      L.DomEvent.preventDefault(e);
      var open = box.style.display === 'none';
      box.style.display = open ? 'block' : 'none';
      div.classList.toggle('open', open);
    });
    L.DomEvent.disableScrollPropagation(div);
    L.DomEvent.disableClickPropagation(div);
    return div;
  };
  control.addTo(map);
""")


def scores_control_class():
    """The folium element of the Scores panel (a Leaflet control at the top left, under the
    zoom buttons, collapsed to a button) from :func:`scores_panel`'s data."""
    return data_element_class(_SCORES_TEMPLATE, "urbangeo_scores")
