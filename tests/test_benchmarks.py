"""The benchmarks run and say true things: tree-baseline features, its training, and the
pipeline benchmark in its --quick mode (as CI runs it)."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

from adaptive_bkg.config import GeneratorConfig
from adaptive_bkg.formats.events import EventBatch, make_event_ids
from adaptive_bkg.formats.labelled import write_labelled
from adaptive_bkg.interfaces import SimResult
from adaptive_bkg.model.synthetic import synthetic_events
from adaptive_bkg.physics.beams import Beams

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> ModuleType:
    if str(ROOT / "benchmarks") not in sys.path:  # as when run as a script: finds _machine.py
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _event(particles: list[tuple[int, int, float, float, float]]) -> EventBatch:
    """One event from (pdg, mother, px, py, pz) with masses from a small table."""
    mass = {11: 0.000511, 22: 0.0, 211: 0.1396, -211: 0.1396, 111: 0.135}
    n = len(particles)
    pdg = np.array([p[0] for p in particles], np.int32)
    mom = np.array([p[2:] for p in particles], np.float64)
    energy = np.sqrt((mom**2).sum(axis=1) + np.array([mass[int(c)] for c in pdg]) ** 2)
    f32 = np.float32
    return EventBatch(
        event_id=make_event_ids(0, 0, 0, 1),
        bkg_type=np.array([2], np.int8),
        seed=np.zeros(1, np.int64),
        offsets=np.array([0, n], np.int64),
        pdg=pdg,
        mother=np.array([p[1] for p in particles], np.int32),
        E=energy.astype(f32),
        px=mom[:, 0].astype(f32),
        py=mom[:, 1].astype(f32),
        pz=mom[:, 2].astype(f32),
        x=np.zeros(n, f32),
        y=np.zeros(n, f32),
        z=np.zeros(n, f32),
        t=np.zeros(n, f32),
    )


def test_tree_features_of_a_hand_built_event() -> None:
    tree = _load("baseline_tree")
    # an electron and a pi- back to back in the CMS-ish transverse plane, a pi0 -> γγ
    event = _event(
        [
            (11, -1, 2.0, 0.0, 0.5),
            (-211, -1, -1.0, 0.0, 0.5),
            (111, -1, 0.0, 1.0, 0.3),
            (22, 2, 0.0, 0.6, 0.2),
            (22, 2, 0.0, 0.4, 0.1),
        ]
    )
    x, names = tree.event_features(event)
    f = dict(zip(names, x[0], strict=True))
    assert 45 <= len(names) <= 60
    e_cm, px, py, pz = Beams.of(GeneratorConfig()).to_cms(
        event.E.astype(float),
        event.px.astype(float),
        event.py.astype(float),
        event.pz.astype(float),
    )
    p_cm = np.sqrt(px**2 + py**2 + pz**2)
    assert f["n_particles"] == 5
    assert f["n_final"] == 4  # the pi0 has daughters
    assert f["n_tracks"] == 2
    assert f["n_electrons"] == 1
    assert f["n_pi0"] == 1
    assert f["p1_lepton"] == pytest.approx(p_cm[0], rel=1e-5)
    assert f["p1_track"] == pytest.approx(max(p_cm[0], p_cm[1]), rel=1e-5)
    assert f["p2_track"] == pytest.approx(min(p_cm[0], p_cm[1]), rel=1e-5)
    assert f["p1_photon"] == pytest.approx(max(e_cm[3], e_cm[4]), rel=1e-5)
    assert f["p1_pi0"] == pytest.approx(p_cm[2], rel=1e-5)
    assert f["net_charge"] == -2  # e- and pi-
    assert 0 <= f["r2"] <= 1
    assert 0.5 <= f["thrust"] <= 1


def test_two_back_to_back_tracks_have_r2_and_thrust_one() -> None:
    tree = _load("baseline_tree")
    beams = Beams.of(GeneratorConfig())
    # Two pions back to back in the CMS, boosted to the lab.
    bx, by, bz = beams.beta
    gamma = 1 / math.sqrt(1 - bx**2 - by**2 - bz**2)
    p = np.array([[1.5, 0.8, 0.2], [-1.5, -0.8, -0.2]])
    e = np.sqrt((p**2).sum(axis=1) + 0.1396**2)
    beta = np.array([bx, by, bz])
    bp = p @ beta
    lab = p + ((gamma - 1) * bp / (beta @ beta) + gamma * e)[:, None] * beta
    event = _event([(211, -1, *lab[0]), (-211, -1, *lab[1])])
    x, names = tree.event_features(event, beams)
    f = dict(zip(names, x[0], strict=True))
    assert f["n_tracks"] == 2
    assert f["r2"] == pytest.approx(1.0, abs=1e-3)
    assert f["thrust"] == pytest.approx(1.0, abs=1e-3)
    assert f["p_miss"] == pytest.approx(0.0, abs=1e-3)


def test_tree_baseline_learns_a_feature_defined_skim(tmp_path: Path) -> None:
    """Labels defined by a generator-level rule the features can express: AUC near 1, and a
    speedup well above 1 with a finite bootstrap error."""
    tree = _load("baseline_tree")
    events = synthetic_events(6000, seed=3, mean_particles=25.0)
    x, names = tree.event_features(events)
    rule = x[:, names.index("p1_track")] > np.quantile(x[:, names.index("p1_track")], 0.95)
    flags = rule[:, None]
    path = tmp_path / "labelled.parquet"
    write_labelled(path, events, SimResult(events.event_id, flags, np.full(6000, 0.1)), ["rule"])
    result = tree.run(path, 4000, 2000, n_bootstrap=10, seed=0, transformer=False)
    (row,) = result["skims"]
    assert row["tree_auc"] > 0.97
    assert row["tree_speedup"] > 3
    assert 0 < row["tree_speedup_err"] < row["tree_speedup"]
    assert result["n_features"] == len(names)


def test_pipeline_benchmark_quick(tmp_path: Path) -> None:
    """`benchmarks/pipeline.py --quick`: every part runs end to end and writes its JSON."""
    out = tmp_path / "pipeline.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "pipeline.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=1200,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    overhead = result["overhead"]
    assert overhead["ray_pipeline_events"] == overhead["events"]
    assert overhead["bare_source_events"] == overhead["events"]
    assert overhead["ray_pipeline_events_per_s"] > 0
    assert overhead["bare_source_events_per_s"] > 0
    runs = result["compare"]["runs"]
    strategies = {(r["case"], r["strategy"]) for r in runs}
    assert {("dstar-d0pi", s) for s in ("no-filter", "static", "adaptive", "two-step")} <= (
        strategies
    )
    assert ("leptonic-untagged@degraded", "adaptive") in strategies
    for r in runs:
        assert r["compute_s"] > 0
        assert math.isfinite(r["speedup"])
        assert math.isfinite(r["speedup_err"])
    no_filter = [r for r in runs if r["strategy"] == "no-filter"]
    # No filter keeps everything with w = 1: its speedup is t3/(t3 + t_nn) exactly, no spread.
    assert no_filter[0]["speedup"] == pytest.approx(101 / 102, rel=0.02)
    assert "| dstar-d0pi | adaptive |" in result["compare"]["markdown"]


def test_scaling_benchmark_quick(tmp_path: Path) -> None:
    """`benchmarks/scaling.py --quick`: the pipeline on a 2-node ray Cluster with 2 simulate
    actors whose backend sleeps; every event is recorded, the figures are finite, the plot is
    written. (No assert on the throughput itself: the machine's load decides it.)"""
    out = tmp_path / "scaling.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "scaling.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["quick"] is True
    assert result["machine"]["cores"] >= 1
    (point,) = result["points"]
    assert point["simulators"] == 2
    assert point["nodes_used"] == 2
    assert point["events"] == 2 * result["rounds"] * result["batch_size"]
    assert point["ideal_events_per_s"] == pytest.approx(2 / (result["sleep_ms_per_event"] / 1e3))
    assert 0 < point["steady_events"] < point["events"]
    assert math.isfinite(point["events_per_s"])
    assert point["events_per_s"] > 0
    assert point["wall_s"] >= point["startup_s"] > 0
    assert result["recorder"][0]["s_per_batch_median"] > 0
    assert {k: v["bytes"] for k, v in result["transfer"].items()} == {
        "part-small": 178_781 * 4,
        "part-2m": 2_090_125 * 4,
    }
    assert out.with_suffix(".png").stat().st_size > 0


def _write(path: Path, data: object) -> None:
    path.write_text(json.dumps(data))


def test_render_headline_from_results(tmp_path: Path) -> None:
    """The headline row of a skim: speedup ± s.e., fractions of the oracle and of the Bayes
    limit (its lower estimate at the largest R, a floor; never the plug-in); a case without
    ceilings and a missing benchmark say "not measured"."""
    render = _load("render")
    table = [
        {
            "case": "dstar-d0pi",
            "strategy": s,
            "seeds": 3,
            "speedup_mean": v,
            "speedup_sem": 0.1,
            "speedup_sigma_mean": 0.3,
        }
        for s, v in (("no-filter", 0.99), ("adaptive", 4.0))
    ] + [
        {
            "case": "dstar-d0pi@degraded",
            "strategy": "adaptive",
            "seeds": 1,
            "speedup_mean": 2.0,
            "speedup_sem": float("nan"),
            "speedup_sigma_mean": 0.2,
        }
    ]
    _write(tmp_path / "pipeline-compare-x.json", {"compare": {"budget_s": 100.0, "table": table}})
    _write(
        tmp_path / "bayes_limit.json",
        {
            "skims": [
                {
                    "skim": "dstar-d0pi",
                    "oracle_speedup": 40.0,
                    "points": [
                        {
                            "replicas": 100,
                            "speedup": 30.0,
                            "speedup_err": 1.0,
                            "plugin": 1.0,
                            "plugin_err": 0,
                        },
                        {
                            "replicas": 400,
                            "speedup": 8.0,
                            "speedup_err": 0.5,
                            "plugin": 10.0,
                            "plugin_err": 0.2,
                        },
                    ],
                }
            ]
        },
    )
    text = render.headline(tmp_path, "")
    assert "Bayes limit 8.00 ± 0.50 (lower estimate, R = 400)" in text
    assert "oracle 40.0 (bayes_limit.json)" in text
    adaptive = next(line for line in text.splitlines() if "| dstar-d0pi | adaptive |" in line)
    # 4.0 ± 0.1 → 10.0 ± 0.25 % of the oracle 40 and 50 ± 1.25 % of the Bayes-limit floor 8
    assert "4.00 ± 0.10 (s.e. over 3 seeds)" in adaptive
    assert "10.00 ± 0.25 %" in adaptive
    assert "50.0 ± 1.2 %" in adaptive
    degraded = next(
        line for line in text.splitlines() if "| dstar-d0pi@degraded | adaptive" in line
    )
    assert "σ of the run" in degraded
    assert degraded.count("not measured") == 2
    assert render.scaling(tmp_path, "").startswith("not measured")
    doc = render.render(tmp_path)
    assert "{{" not in doc
    assert "| stage | device | events/s |" in doc


def test_run_all_reports_a_failing_benchmark_and_runs_the_rest(tmp_path: Path) -> None:
    run_all = _load("run_all")
    py = sys.executable
    write = f"open({str(tmp_path / 'x.json')!r}, 'w').write('{{}}')"
    fail = run_all.Benchmark(
        "fails", "exits 3", "0", lambda r, d: [], lambda r, d: [[py, "-c", "raise SystemExit(3)"]]
    )
    ok = run_all.Benchmark(
        "works", "writes", "0", lambda r, d: [], lambda r, d: [[py, "-c", write]]
    )
    rows = [
        run_all.run_one(b, True, tmp_path, tmp_path, tmp_path / f"{b.name}.log") for b in (fail, ok)
    ]
    assert [(r["status"], r["returncode"]) for r in rows] == [("failed", 3), ("ok", 0)]
    assert (tmp_path / "x.json").exists()
    full_only = run_all.Benchmark("soakish", "long", "40", lambda r, d: [], None)
    row = run_all.run_one(full_only, True, tmp_path, tmp_path, tmp_path / "s.log")
    assert row["status"] == "skipped"
    needs = run_all.Benchmark(
        "needs", "input", "1", lambda r, d: [["true"]], None, needs=("a.parquet",)
    )
    row = run_all.run_one(needs, False, tmp_path, tmp_path, tmp_path / "n.log")
    assert (row["status"], row["reason"]) == ("skipped", "needs a.parquet in --data")
    with pytest.raises(SystemExit, match="unknown benchmark nope"):
        run_all.select("nope", None)


def test_closure_suite_benchmark_quick(tmp_path: Path) -> None:
    """`benchmarks/closure_suite.py --quick`: 3 adaptive replays and 1 hard-cut replay of the
    shipped file, the suite on both, the JSON with the keys docs/validation.md reports."""
    out = tmp_path / "closure.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "closure_suite.py"), "--quick",
         "--out", str(out), "--workdir", str(tmp_path / "work")],
        capture_output=True, text=True, timeout=1200, cwd=tmp_path, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    for block in (result, result["hard_cut"]):
        for key in ("n_observables", "n_seeds", "pull_mean", "pull_width", "ks_pvalue"):
            assert key in block
    assert result["n_seeds"] == 3
    assert result["n_observables"] >= 20
    assert result["passed"], result["reason"]
    assert not result["hard_cut"]["passed"]
    assert result["hard_cut"]["n_p_zero"] > 0
    assert result["hard_cut"]["pull_mean"] < -1
