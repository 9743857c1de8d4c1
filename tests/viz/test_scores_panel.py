"""The offline map's "Scores" panel (issue #17 item 3): every model's and feature set's test R²
from metrics.json, side by side, checked in headless Chromium."""

from __future__ import annotations

import json

import pytest

from tests.downstream.helpers import make_run
from tests.viz.browser import Browser, require_chromium
from tests.viz.test_map_scale import synthetic
from urbangeo import constants as C
from urbangeo.viz.maps import build_map, write_map
from urbangeo.viz.scores import read_metrics, scores_panel

EVIL = '<script>document.title="pwned"</script><img src=x onerror="document.title=\'pwned\'">'


def _r2(mean, std):
    return {"r2": {"mean": mean, "std": std, "values": [], "n": []}, "rmse": {"mean": 1.0}}


#: Two targets × five models, in metrics.json's shape (predict's report.to_dict).
METRICS = {
    "protocol": {
        "kind": "within-city",
        "split": "block",
        "block_size": 2000.0,
        "ratios": [0.6, 0.2, 0.2],
        "seeds": [0, 1, 2],
        "folds": 5,
        "repeats": [0, 1, 2],
        "regions": 120,
        "models": {
            "mlp": "MLP head (embedding)",
            "ridge": "ridge (embedding)",
            f"{EVIL}:ridge": f"ridge ({EVIL})",
            "coords_knn": "k-NN on x/y only",
            "train_mean": "training mean",
        },
    },
    "targets": {
        "population": {
            "scheme": "split",
            "n_regions": 118,
            "metrics": {
                "train_mean": _r2(-0.0123, 0.004),
                "ridge": _r2(0.61234, 0.05678),
                "mlp": _r2(0.55555, 0.1),
                f"{EVIL}:ridge": _r2(0.2, 0.01),
                "coords_knn": _r2(0.7089, 0.0321),
            },
            "below_baseline": {"mlp": False, "ridge": False, "coords_knn": False},
        },
        "shops": {
            "scheme": "kfold",
            "n_regions": 80,
            "folds": 5,
            "repeats": 3,
            "metrics": {
                "mlp": _r2(-0.3, 0.2),
                "ridge": _r2(0.0456, 0.0111),
                f"{EVIL}:ridge": _r2(0.0012, 0.002),
                "coords_knn": _r2(-0.05, 0.01),
                "train_mean": _r2(0.01, 0.003),  # pooled out-of-fold: can be above 0
            },
        },
    },
}


def _expected(metrics: dict, target: str) -> list[tuple[str, str, bool, bool]]:
    """(label, shown R², best, greyed) per model in protocol.models order, worked out here."""
    labels = metrics["protocol"]["models"]
    scores = metrics["targets"][target]["metrics"]
    means = {m: scores[m]["r2"]["mean"] for m in labels}
    floor = max(0.0, means["train_mean"])
    return [
        (
            label,
            f"{means[m]:.3f} ± {scores[m]['r2']['std']:.3f}",
            means[m] == max(means.values()),
            means[m] < floor,
        )
        for m, label in labels.items()
    ]


def test_panel_data_follows_the_metrics():
    panel = scores_panel(METRICS)
    assert panel is not None
    for target in panel["targets"]:
        got = [(r["label"], r["r2"], r["best"], r["below"]) for r in target["rows"]]
        assert got == _expected(METRICS, target["name"])
    assert [t["note"] for t in panel["targets"]] == ["118 regions", "80 regions, 5-fold × 3"]
    line = panel["protocol"]
    for part in ("within-city", "block split (2000 m blocks)", "6:2:2 × 3 seeds", "120 regions"):
        assert part in line
    assert "5-fold × 3 repeats" in line  # one target fell back to k-fold


def test_panel_keeps_models_missing_from_the_protocol_and_skips_empty_metrics():
    metrics = {
        "protocol": {"models": {"mlp": "MLP head (embedding)"}},
        "targets": {
            "a": {"metrics": {"ridge": _r2(0.3, None), "mlp": _r2(float("nan"), None)}},
            "b": {"below_baseline": {"mlp": True}},  # no metrics: no table
        },
    }
    panel = scores_panel(metrics)
    assert panel is not None
    rows = panel["targets"][0]["rows"]
    assert [(r["label"], r["r2"], r["best"], r["below"]) for r in rows] == [
        ("MLP head (embedding)", "n/a", False, True),
        ("ridge", "0.300", True, False),
    ]
    assert len(panel["targets"]) == 1
    assert scores_panel(None) is None
    assert scores_panel({"protocol": {}, "targets": {"b": {"below_baseline": {}}}}) is None


#: The panel as the page shows it, after a click on its button.
READ_PANEL = """
(function () {
  var panel = document.getElementById('urbangeo-scores');
  var box = panel.querySelector('.urbangeo-scores-box');
  var closed = box.style.display === 'none';
  panel.querySelector('.urbangeo-scores-button').click();
  var out = {closed: closed, open: box.style.display !== 'none',
             protocol: box.querySelector('.protocol').textContent, targets: []};
  box.querySelectorAll('table').forEach(function (table) {
    var title = table.previousElementSibling;
    out.targets.push({title: title.textContent, rows: Array.from(table.rows).map(function (tr) {
      return [tr.cells[0].textContent, tr.cells[1].textContent,
              getComputedStyle(tr).fontWeight === '700', tr.classList.contains('below'),
              getComputedStyle(tr).color];
    })});
  });
  out.scripts = panel.querySelectorAll('script, img').length;
  return out;
})()
"""


def test_scores_panel_in_a_real_browser(tmp_path):
    require_chromium()
    regions, observed, clusters, _ = synthetic(6, 5)
    scored = build_map(regions, clusters=clusters, observed=observed, metrics=METRICS)
    with_scores = write_map(scored, tmp_path / "scores.html")
    without = write_map(build_map(regions, clusters=clusters), tmp_path / "plain.html")
    with Browser() as browser:
        browser.open(with_scores.as_uri())
        browser.js("urbangeo.ready()")
        panel = browser.js(READ_PANEL)
        assert panel["closed"] and panel["open"]  # collapsed to a button until clicked
        assert panel["protocol"].startswith("within-city; block split")
        assert [t["title"] for t in panel["targets"]] == [
            "population (118 regions)",
            "shops (80 regions, 5-fold × 3)",
        ]
        for target, name in zip(panel["targets"], ("population", "shops"), strict=True):
            rows = [tuple(r[:4]) for r in target["rows"]]
            assert rows == _expected(METRICS, name)
            grey = {r[4] for r in target["rows"] if r[3]}
            assert grey and not grey & {r[4] for r in target["rows"] if not r[3]}
        assert panel["targets"][0]["rows"][2][0] == f"ridge ({EVIL})"  # shown as text
        assert panel["scripts"] == 0
        assert "pwned" not in browser.js("document.title")
        assert browser.errors() == []
        browser.open(without.as_uri())
        browser.js("urbangeo.ready()")
        assert browser.js("document.getElementById('urbangeo-scores') === null")
        assert browser.js("document.querySelectorAll('.urbangeo-scores').length") == 0


def test_map_stage_passes_the_runs_metrics(tmp_path, monkeypatch):
    from urbangeo.viz import maps
    from urbangeo.viz.stages import map_stage

    gpkg, _, _ = make_run(tmp_path / "run", cols=4, rows=3)
    seen = []
    original = maps.build_map

    def spy(*args, **kwargs):
        seen.append(kwargs.get("metrics"))
        return original(*args, **kwargs)

    monkeypatch.setattr(maps, "build_map", spy)
    map_stage(gpkg, output=tmp_path / "none.html")
    (gpkg.parent / C.METRICS_JSON).write_text(json.dumps(METRICS))
    assert read_metrics(gpkg.parent / C.METRICS_JSON) == METRICS
    out = tmp_path / "with.html"
    map_stage(gpkg, output=out)
    assert seen == [None, METRICS]
    assert "k-NN on x/y only" in out.read_text()  # the panel's data is on the page


def test_unreadable_metrics_say_what_to_do(tmp_path):
    from urbangeo.errors import InputError

    path = tmp_path / C.METRICS_JSON
    path.write_text("{not json")
    with pytest.raises(InputError) as info:
        read_metrics(path)
    assert "predict" in str(info.value.hint)
