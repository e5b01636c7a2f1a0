"""The closure suite: its statistics on synthetic draws (fixed seeds), then end to end on
replays of the shipped labelled file: an unbiased policy passes, `hard-cut` fails, the command
line answers 0 / 1 / 2."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from adaptive_bkg.cli import app
from adaptive_bkg.config import GeneratorConfig, load_config
from adaptive_bkg.formats.events import EventBatch, make_event_ids
from adaptive_bkg.physics.beams import Beams
from adaptive_bkg.pipeline.replay import replay_run
from adaptive_bkg.stats.closure_tests import (
    binned_test,
    difference_cumulants,
    merge_bins,
    summarize_pulls,
    uniformity,
)
from adaptive_bkg.workflows.observables import OBSERVABLES, generator_observables
from adaptive_bkg.workflows.validate import validate_runs

DATA = Path(__file__).parent.parent / "notebooks" / "data" / "labelled.parquet"
EDGES = np.linspace(-3.0, 3.0, 25)


# -- statistics ------------------------------------------------------------------------------
def test_cumulants_are_those_of_the_two_point_distribution() -> None:
    for p in (0.01, 0.2, 0.5, 0.9, 1.0):
        values = np.array([1 / p - 1, -1.0])  # kept, dropped
        prob = np.array([p, 1 - p])
        m2, m3, m4 = ((prob * values**k).sum() for k in (2, 3, 4))  # mean is 0
        k2, k3, k4 = (float(c[0]) for c in difference_cumulants(np.array([p])))
        assert k2 == pytest.approx(m2, abs=1e-9)
        assert k3 == pytest.approx(m3, abs=1e-9)
        assert k4 == pytest.approx(m4 - 3 * m2**2, abs=1e-6)
    assert [float(c[0]) for c in difference_cumulants(np.array([0.0]))] == [1.0, 1.0, 1.0]


def test_sparse_and_empty_bins_are_merged_with_their_neighbours() -> None:
    # 10 bins: 4 empty, the rest with 20 events at p = 0.1 each (skewness too large alone).
    n_events = np.array([0, 20, 20, 0, 20, 20, 20, 0, 0, 20], dtype=np.float64)
    k2, k3, k4 = (n_events * c[0] for c in difference_cumulants(np.array([0.1])))
    group = merge_bins(k2, k3, k4, min_count=10)
    assert group[0] == 0
    assert np.all(np.diff(group) >= 0)
    for g in np.unique(group):
        assert n_events[group == g].sum() >= 60  # ~6 kept expected per group at least
    # Every event kept with p = 1: no variance, nothing to test.
    zeros = np.zeros(10)
    assert np.all(merge_bins(zeros, zeros, zeros, 10) == -1)


def _synthetic_run(rng: np.random.Generator, biased: bool = False) -> tuple[list, list]:
    """One run: 4000 passing events, an observable x, p from the event's 'score'; the pulls
    and the χ² p-value of x and of a second, correlated observable."""
    n = 4000
    x = rng.normal(size=n)
    p = np.clip(0.5 * np.exp(0.7 * x), 0.02, 1.0)  # low p in the left tail: large weights
    if biased:
        p = np.where(p > 0.2, 1.0, 0.0)  # a hard cut
    kept = rng.random(n) < p
    w = np.where(kept, 1 / np.where(p > 0, p, 1), 0.0)
    tests = []
    for obs in (x, x + rng.normal(0, 0.5, n)):
        hist = [np.histogram(obs, EDGES, weights=v)[0] for v in (None, w, w * w)]
        cum = tuple(np.histogram(obs, EDGES, weights=c)[0] for c in difference_cumulants(p))
        tests.append(binned_test(hist[0].astype(float), hist[1], hist[2], cum, min_count=10))
    return [t.pulls for t in tests], [t.pulls_sumw2 for t in tests], [t.p_value for t in tests]


def test_unbiased_synthetic_runs_close_and_a_hard_cut_does_not() -> None:
    rng = np.random.default_rng(5)
    runs = [_synthetic_run(rng) for _ in range(60)]
    pulls = summarize_pulls([r[0] for r in runs])
    assert pulls.n_pulls > 60 * 2 * 8  # most of the 24 bins survive merging
    assert pulls.error_from_runs
    # mean 0, width 1 within 3 of their (between-run) errors, and the errors are small
    assert abs(pulls.mean.value) < 3 * pulls.mean.error
    assert pulls.mean.error < 0.05
    assert abs(pulls.width.value - 1) < 3 * pulls.width.error
    assert pulls.width.error < 0.05
    u = uniformity({"x": [r[2][0] for r in runs], "y": [r[2][1] for r in runs]})
    assert u.ks_pvalue > 0.01
    # The analyst's Σw² variance also holds each event's own Poisson spread: pulls too narrow.
    assert summarize_pulls([r[1] for r in runs]).width.value < 0.9
    biased = [_synthetic_run(rng, biased=True) for _ in range(5)]
    cut = summarize_pulls([r[0] for r in biased])
    assert cut.mean.value < -3
    assert uniformity({"x": [r[2][0] for r in biased]}).ks_pvalue < 1e-3


def test_errors_of_correlated_pulls_come_from_the_spread_between_runs() -> None:
    """Within a run every pull shares an offset (like observables sharing events): the
    jackknife error sees it, the i.i.d. formula would be ~7x too small."""
    rng = np.random.default_rng(6)
    runs = [[rng.normal(size=50) + rng.normal()] for _ in range(40)]
    s = summarize_pulls(runs)
    true_error = math.sqrt((1 + 1 / 50) / 40)  # sd of the mean of 40 run means
    assert s.mean.error == pytest.approx(true_error, rel=0.3)
    assert s.mean.error > 5 * s.width.value / math.sqrt(s.n_pulls)
    one = summarize_pulls(runs[:1])  # one run: the fully-correlated bound, not i.i.d.
    assert not one.error_from_runs
    assert one.mean.error == pytest.approx(one.width.value / math.sqrt(50))


def test_generator_observables_of_a_back_to_back_pair() -> None:
    beams = Beams.of(GeneratorConfig())
    p = np.array([[1.5, 0.8, 0.2], [-1.5, -0.8, -0.2]])
    m = np.array([0.000511, 0.1396])
    e_cms = np.sqrt((p**2).sum(axis=1) + m**2)
    e, px, py, pz = beams.to_lab(e_cms, p[:, 0], p[:, 1], p[:, 2])
    f32, z = np.float32, np.zeros(2, np.float32)
    event = EventBatch(
        event_id=make_event_ids(0, 0, 0, 1), bkg_type=np.array([2], np.int8),
        seed=np.zeros(1, np.int64), offsets=np.array([0, 2], np.int64),
        pdg=np.array([11, 211], np.int32), mother=np.array([-1, -1], np.int32),
        E=e.astype(f32), px=px.astype(f32), py=py.astype(f32), pz=pz.astype(f32),
        x=z, y=z, z=z, t=z,
    )  # fmt: skip
    v = {k: float(a[0]) for k, a in generator_observables(event, beams).items()}
    p_abs = float(np.linalg.norm(p[0]))
    assert v["gen_n_charged"] == 2
    assert v["gen_thrust"] == pytest.approx(1.0, abs=1e-3)
    assert v["gen_r2"] == pytest.approx(1.0, abs=1e-3)
    assert v["gen_p_miss"] == pytest.approx(0.0, abs=1e-3)
    assert v["gen_lepton_pstar"] == pytest.approx(p_abs, rel=1e-4)
    assert v["gen_p_track"] == pytest.approx(p_abs, rel=1e-4)
    assert abs(v["gen_cos_track"]) == pytest.approx(0.2 / p_abs, rel=1e-3)
    assert math.isnan(v["gen_e_photon"])  # no photon
    assert v["gen_e_vis"] == pytest.approx(e_cms.sum(), rel=1e-4)


# -- end to end ------------------------------------------------------------------------------
def _replay(out: Path, seed: int, policy: str) -> Path:
    cfg = load_config(
        None,
        ["run.skims=[tau-generic]", "run.plots=false", "run.batch_size=500",
         f"run.seed={seed}", f"run.out={out}", f"policy.name={policy}"],
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hard-cut's BiasedPolicyWarning: intended here
        replay_run(cfg, DATA, learn=False, show_live=False)
    return out


@pytest.fixture(scope="module")
def replays(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Three sqrt-optimal replays (policy refitted during the run) with different keep-draw
    seeds, and one hard-cut replay, of the shipped 4000 events."""
    root = tmp_path_factory.mktemp("replays")
    return {
        "unbiased": [_replay(root / f"s{seed}", seed, "sqrt-optimal") for seed in (1, 2, 3)],
        "hard_cut": [_replay(root / "cut", 1, "hard-cut")],
    }


def test_an_unbiased_policy_passes(replays: dict[str, list[Path]]) -> None:
    v = validate_runs(replays["unbiased"], DATA)
    assert v.passed, v.reason
    assert v.n_observables == len(OBSERVABLES) >= 20
    assert {o.level for o in OBSERVABLES} == {"gen", "reco"}
    assert v.n_tested >= 20  # tau-generic has no D or B candidates to test
    p = v.pulls
    assert p.n_pulls > 3 * 20 * 4
    assert p.error_from_runs
    # Seeds 1-3 measured: mean +0.18 ± 0.22 (the three runs share their events' fluctuations:
    # between-run error), width 0.97 ± 0.03, KS p 0.035; tolerances: |mean| < 3σ, width 1 ± 0.1.
    assert abs(p.mean.value) < 3 * p.mean.error
    assert abs(p.width.value - 1) < 0.1
    assert v.uniformity.ks_pvalue > 0.01
    assert v.n_p_zero == 0


def test_hard_cut_fails(replays: dict[str, list[Path]]) -> None:
    v = validate_runs(replays["hard_cut"], DATA)
    assert not v.passed
    assert v.n_p_zero > 100  # passing events it could never keep
    assert v.pulls.mean.value < -1.5
    assert "keep probability 0" in v.reason
    assert "pull mean" in v.reason


def test_validate_from_the_command_line(replays: dict[str, list[Path]], tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "closure.json"
    args = ["validate", *map(str, replays["unbiased"]), "--data", str(DATA), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "PASS: closure passes" in result.output
    saved = json.loads(out.read_text())
    for key in ("n_observables", "n_seeds", "pull_mean", "pull_width", "ks_pvalue"):
        assert key in saved
    assert saved["n_seeds"] == 3
    cut = runner.invoke(app, ["validate", *map(str, replays["hard_cut"]), "--data", str(DATA)])
    assert cut.exit_code == 1
    assert cut.output.strip().splitlines()[-1].startswith("FAIL: ")
    assert "Traceback" not in cut.output


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing-data", "not found"),
        ("not-a-run", "not a run directory"),
        ("other-skim", "did not produce for dstar-d0pi"),
        ("out-is-folder", "is a folder"),
        ("bad-min-count", "must be positive"),
    ],
)
def test_bad_input_is_one_line(
    replays: dict[str, list[Path]], tmp_path: Path, case: str, message: str
) -> None:
    run = str(replays["unbiased"][0])
    args = {
        "missing-data": [run, "--data", str(tmp_path / "missing.parquet")],
        "not-a-run": [str(tmp_path), "--data", str(DATA)],
        "other-skim": [run, "--data", str(DATA), "--skim", "dstar-d0pi"],
        "out-is-folder": [run, "--data", str(DATA), "--out", str(tmp_path)],
        "bad-min-count": [run, "--data", str(DATA), "--min-count", "0"],
    }[case]
    result = CliRunner().invoke(app, ["validate", *args])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert message in lines[0]
    assert "Traceback" not in result.output
