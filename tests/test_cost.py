"""Cost model, clocks and `adaptive-bkg calibrate`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from adaptive_bkg.backends.emulator.cost import (
    FEATURES,
    REFERENCE_FEATURE_MEANS,
    CostModel,
    VirtualClock,
    WallClock,
    event_features,
    feature_means,
    load_cost_file,
    make_clock,
)
from adaptive_bkg.backends.emulator.cost_fit import fit_cost_table
from adaptive_bkg.cli import app
from adaptive_bkg.config import BackendConfig, CostConfig, load_config
from adaptive_bkg.errors import UserError
from adaptive_bkg.formats.events import (
    EventBatch,
    make_event_ids,
    write_events,
)
from adaptive_bkg.physics.processes import BKG_TYPES, CROSS_SECTIONS_NB

runner = CliRunner()


def one_event(pdg: list[int], mother: list[int], p: list[tuple[float, float, float]]) -> EventBatch:
    """A single hand-built event with massless particles (E = |p|)."""
    mom = np.array(p, dtype=np.float32)
    n = len(pdg)
    zeros = np.zeros(n, np.float32)
    return EventBatch(
        event_id=np.array([42], np.uint64),
        bkg_type=np.array([BKG_TYPES.index("uubar")], np.int8),
        seed=np.array([1], np.int64),
        offsets=np.array([0, n], np.int64),
        pdg=np.array(pdg, np.int32),
        mother=np.array(mother, np.int32),
        E=np.linalg.norm(mom, axis=1).astype(np.float32),
        px=mom[:, 0],
        py=mom[:, 1],
        pz=mom[:, 2],
        x=zeros,
        y=zeros,
        z=zeros,
        t=zeros,
    )


def test_event_features_by_hand() -> None:
    # 0: a rho0 (decays to 1, 2); 1, 2: pi+ pi- in the barrel; 3: photon along the beam (outside
    # the ECL); 4: neutrino in the barrel (invisible); 5: pi+ with pT 0.05 GeV (no track, visible).
    batch = one_event(
        pdg=[113, 211, -211, 22, 12, 211],
        mother=[-1, 0, 0, -1, -1, -1],
        p=[
            (0.0, 0.0, 1.0),
            (1.0, 0.0, 0.0),
            (0.0, 2.0, 0.0),
            (0.0, 0.0, 3.0),
            (0.5, 0, 0),
            (0.05, 0, 0),
        ],
    )
    features = event_features(batch)
    assert features.n_particles.tolist() == [6.0]
    assert features.n_final.tolist() == [5.0]  # everything but the rho0
    assert features.n_tracks.tolist() == [2.0]
    assert features.e_visible_gev == pytest.approx([1.0 + 2.0 + 0.05], rel=1e-6)


def test_features_of_empty_batch() -> None:
    features = event_features(EventBatch.empty())
    assert all(features.get(f).shape == (0,) for f in FEATURES)


def test_default_mean_ratio_and_scale() -> None:
    model = CostModel.from_config(BackendConfig())
    t_fast, t_nn, t_slow = model.mean_times
    assert t_slow == pytest.approx(0.1, rel=1e-12)  # documented default: yu2022 t_SR ≈ 97 ms
    assert (t_fast / t_fast, t_nn / t_fast, t_slow / t_fast) == pytest.approx((1, 1, 100))


def test_configured_ratio_and_scale() -> None:
    cfg = load_config(None, ["backend.cost.ratio=[1,2,50]", "backend.cost.t_slow_mean_s=2.0"])
    assert CostModel.from_config(cfg.backend).mean_times == pytest.approx((0.04, 0.08, 2.0))


def test_bad_ratio_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"backend\.cost\.ratio"):
        load_config(None, ["backend.cost.ratio=[1,0,100]"])


def test_per_event_means_match_reference_table(synthetic_batch: EventBatch) -> None:
    # The ratio is exact on the reference feature means; on any events the per-event costs
    # are the linear formula evaluated there, so the per-type mean cost equals the formula
    # at that type's mean features (linearity; exact up to float rounding).
    model = CostModel.from_config(BackendConfig())
    slow = model.slow_cost(synthetic_batch)
    features = event_features(synthetic_batch)
    for code in np.unique(synthetic_batch.bkg_type):
        sel = synthetic_batch.bkg_type == code
        expected = model.intercept_s + sum(
            c * features.get(f)[sel].mean() for f, c in model.coefficients.items()
        )
        assert slow[sel].mean() == pytest.approx(expected, rel=1e-12)
    assert model.fast_cost(synthetic_batch).shape == (len(synthetic_batch),)
    assert (model.nn_cost(synthetic_batch) > 0).all()


def test_mean_ratio_on_reference_mixture() -> None:
    # Evaluate the model on "events" whose features equal the per-type reference means,
    # weighted by cross section: that is the definition of the generic-mixture mean.
    model = CostModel.from_config(BackendConfig())
    total = sum(CROSS_SECTIONS_NB.values())
    mean_slow = sum(
        CROSS_SECTIONS_NB[t]
        / total
        * (
            model.intercept_s
            + sum(c * REFERENCE_FEATURE_MEANS[t][f] for f, c in model.coefficients.items())
        )
        for t in BKG_TYPES
    )
    assert mean_slow / model.mean_times[0] == pytest.approx(100.0, rel=1e-9)


def test_mean_ratio_on_generated_generic_mixture(small_events: EventBatch) -> None:
    # Per-type means weighted by cross section (removes the type-count fluctuation). The
    # per-event t_slow has a relative spread of ~19 %, so with 1400 events the mixture mean is
    # known to ~0.6 %; 3 % (5 sigma) also catches a stale REFERENCE_FEATURE_MEANS table.
    model = CostModel.from_config(BackendConfig())
    total = sum(CROSS_SECTIONS_NB.values())
    means = [
        sum(
            CROSS_SECTIONS_NB[t] / total * cost[small_events.bkg_type == code].mean()
            for code, t in enumerate(BKG_TYPES)
        )
        for cost in (
            model.fast_cost(small_events),
            model.nn_cost(small_events),
            model.slow_cost(small_events),
        )
    ]
    assert means == pytest.approx([0.001, 0.001, 0.1], rel=0.03)
    assert means[2] / means[0] == pytest.approx(100.0, rel=0.03)


def test_reference_means_match_generator(small_events: EventBatch) -> None:
    # Same events, per type and feature: the table was measured on 3000 other events per type
    # (~0.5 % precision); here the rarest type has ~90 events, so allow 5 standard errors of
    # this sample's mean plus 2 % for the table.
    features = event_features(small_events)
    table = feature_means(small_events)  # the helper that refreshes REFERENCE_FEATURE_MEANS
    for code, bkg_type in enumerate(BKG_TYPES):
        sel = small_events.bkg_type == code
        assert sel.sum() > 50, bkg_type
        for feature in FEATURES:
            values = features.get(feature)[sel]
            reference = REFERENCE_FEATURE_MEANS[bkg_type][feature]
            tolerance = 5 * values.std() / np.sqrt(len(values)) + 0.02 * reference
            assert abs(values.mean() - reference) < tolerance, (bkg_type, feature)
            assert table[bkg_type][feature] == pytest.approx(values.mean(), rel=1e-12)


def test_virtual_clock_is_deterministic(synthetic_batch: EventBatch) -> None:
    model = CostModel.from_config(BackendConfig())
    first, second = model.slow_cost(synthetic_batch), model.slow_cost(synthetic_batch)
    assert first.tobytes() == second.tobytes()
    clocks = [make_clock(BackendConfig()), make_clock(BackendConfig())]
    for clock in clocks:
        assert isinstance(clock, VirtualClock)
        assert not isinstance(clock, WallClock)
        for cost in first:
            clock.spend(float(cost))
    assert clocks[0].spent_s == clocks[1].spent_s == pytest.approx(first.sum(), rel=1e-12)
    with pytest.raises(ValueError, match="cannot spend"):
        clocks[0].spend(-1.0)


def test_wall_clock_really_waits() -> None:
    clock = make_clock(BackendConfig(clock="wall", cost=CostConfig(wall_speedup=10.0)))
    assert isinstance(clock, WallClock)
    start = time.perf_counter()
    clock.spend(0.5)  # 0.5 s of cost at speedup 10 -> at least 0.05 s of real time
    elapsed = time.perf_counter() - start
    assert elapsed >= 0.05  # lower bound only: a loaded machine may wait longer
    assert clock.spent_s == 0.5


def test_negative_fitted_terms_stay_positive(tmp_path: Path) -> None:
    # A fit may give a negative slope; the mixture mean stays positive (1 - 0.01 * ~45 s) but
    # an event with 200 particles would cost 1 - 2 = -1 s: it is floored at 1 % of the mean.
    path = tmp_path / "cost.yaml"
    path.write_text(yaml.safe_dump({"intercept_s": 1.0, "coefficients": {"n_particles": -0.01}}))
    model = CostModel.from_config(BackendConfig(cost=CostConfig(file=path)))
    big = one_event([211] * 200, [-1] * 200, [(1.0, 0.0, 0.0)] * 200)
    assert model.floor_s == pytest.approx(0.01 * model.mean_times[2])
    assert model.slow_cost(big)[0] == model.floor_s > 0


# ---------------------------------------------------------------------------------------------
def write_synthetic_timings(path: Path, n: int = 2000, seed: int = 3) -> dict[str, float]:
    """A timing table with known coefficients, Gaussian noise and 2% slow outliers."""
    rng = np.random.default_rng(seed)
    truth = {"intercept_s": 0.2, "n_particles": 0.004, "e_visible_gev": 0.03, "n_tracks": 0.01}
    n_particles = rng.poisson(45, n)
    e_visible = rng.uniform(2.0, 11.0, n)
    n_tracks = rng.poisson(9, n)
    t = (
        truth["intercept_s"]
        + truth["n_particles"] * n_particles
        + truth["e_visible_gev"] * e_visible
        + truth["n_tracks"] * n_tracks
        + rng.normal(0, 0.02, n)
    )
    outliers = rng.random(n) < 0.02
    t[outliers] += 5.0  # e.g. the first event of a job loading geometry and conditions
    lines = ["event_id,t_slow_s,n_particles,e_visible_gev,n_tracks,node"]
    lines += [
        f"{i},{t[i]:.6f},{n_particles[i]},{e_visible[i]:.5f},{n_tracks[i]},wn{i % 7:02d}"
        for i in range(n)
    ]
    path.write_text("\n".join(lines) + "\n")
    return truth


def test_fit_recovers_known_coefficients(tmp_path: Path) -> None:
    csv_path = tmp_path / "timings.csv"
    truth = write_synthetic_timings(csv_path)
    fit = fit_cost_table(csv_path)
    # Tolerance: 5 reported standard errors (the noise is Gaussian, sigma 0.02 s; the Huber
    # loss must shrug off the +5 s outliers, which would bias plain least squares by ~0.1 s).
    assert abs(fit.intercept_s - truth["intercept_s"]) < 5 * fit.intercept_err_s
    assert fit.intercept_err_s < 0.01
    for name in ("n_particles", "e_visible_gev", "n_tracks"):
        assert abs(fit.coefficients[name] - truth[name]) < 5 * fit.errors[name], name
        assert fit.errors[name] < 0.1 * truth[name], name
    assert fit.ignored_columns == ("node",)  # a text column we do not use is no error
    assert 30 <= fit.n_outliers <= 60  # 2% of 2000 events were made +5 s (250 sigma) slow
    # Without outliers R² = 1 - noise / total variance = 1 - 0.0004 / (0.0004 + 0.0077) = 0.95
    # (signal: 45 * 0.004² + 6.75 * 0.03² + 9 * 0.01²); seeds 0-4 give 0.950-0.954.
    assert 0.93 < fit.r2 < 0.97


def test_calibrate_cli_writes_loadable_cost_file(tmp_path: Path) -> None:
    csv_path, out = tmp_path / "timings.csv", tmp_path / "sims" / "cost.yaml"
    truth = write_synthetic_timings(csv_path)
    result = runner.invoke(app, ["calibrate", str(csv_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "R²" in result.output
    assert "n_tracks" in result.output
    loaded = load_cost_file(out)
    assert loaded.coefficients["e_visible_gev"] == pytest.approx(truth["e_visible_gev"], rel=0.1)
    model = CostModel.from_config(BackendConfig(cost=CostConfig(file=out)))
    t_fast, t_nn, t_slow = model.mean_times
    assert t_slow / t_fast == pytest.approx(100.0)
    assert t_nn == t_fast
    # Rescaling a calibrated shape to another mean keeps the shape.
    rescaled = CostModel.from_config(BackendConfig(cost=CostConfig(file=out, t_slow_mean_s=1.0)))
    assert rescaled.mean_times[2] == pytest.approx(1.0)
    assert rescaled.coefficients["n_tracks"] / rescaled.intercept_s == pytest.approx(
        model.coefficients["n_tracks"] / model.intercept_s
    )


def test_fit_with_features_from_events_file(
    tmp_path: Path, make_synthetic_events: Callable[..., EventBatch]
) -> None:
    # The external-backend workflow: per-event seconds by event_id (ids above 2^53 must survive
    # the CSV), features computed from the events file; noise-free, so the fit is exact.
    events = make_synthetic_events(300, seed=4)
    events = replace(events, event_id=make_event_ids(1_000_000, 5, 7, len(events)))
    write_events(tmp_path / "events.parquet", events)
    features = event_features(events)
    t = 0.05 + 0.002 * features.n_particles + 0.01 * features.e_visible_gev
    order = np.random.default_rng(1).permutation(len(events))  # rows in any order
    (tmp_path / "t.csv").write_text(
        "event_id,t_slow_s\n" + "".join(f"{events.event_id[i]},{float(t[i])!r}\n" for i in order)
    )
    fit = fit_cost_table(tmp_path / "t.csv", events=tmp_path / "events.parquet")
    assert fit.intercept_s == pytest.approx(0.05, abs=1e-9)
    assert fit.coefficients == pytest.approx({"n_particles": 0.002, "e_visible_gev": 0.01})
    assert fit.r2 == pytest.approx(1.0)
    out = tmp_path / "cost.yaml"
    result = runner.invoke(
        app,
        [
            "calibrate",
            str(tmp_path / "t.csv"),
            "--events",
            str(tmp_path / "events.parquet"),
            "--feature",
            "n_particles",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert set(load_cost_file(out).coefficients) == {"n_particles"}
    # An id the events file does not hold is named.
    (tmp_path / "bad.csv").write_text("event_id,t_slow_s\n1,0.5\n")
    with pytest.raises(UserError, match=r"event ids \[1\] are not in"):
        fit_cost_table(tmp_path / "bad.csv", events=tmp_path / "events.parquet")
    with pytest.raises(UserError, match=r"unknown cost features \['n_pions'\]"):
        fit_cost_table(tmp_path / "t.csv", features=["n_pions"])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("t_slow_s,n_particles,e_visible_gev\n", "no rows"),
        ("t_slow_s,n_particles\n1.0,3\n", "lacks columns ['e_visible_gev']"),
        (
            "t_slow_s,n_particles,e_visible_gev\n1.0,3,abc\n",
            "e_visible_gev = 'abc' is not a number",
        ),
        ("t_slow_s,n_particles,e_visible_gev\n1.0,nan,2.0\n", "n_particles = 'nan' is not finite"),
        ("t_slow_s,n_particles,e_visible_gev\n1.0,3,2\n1.1,4,3\n", "2 rows cannot fit 3"),
        ("t_slow_s,n_particles,e_visible_gev\n" + "1.0,3,2\n" * 5, "are constant"),
        ("t_slow_s,n_particles,e_visible_gev\n-1.0,3,2\n", "t_slow_s must be > 0"),
        ("event_id,t_slow_s,n_particles,e_visible_gev\n1.5,1,3,2\n", "event_id = '1.5' is not"),
    ],
)
def test_calibrate_rejects_malformed_tables(tmp_path: Path, content: str, message: str) -> None:
    csv_path = tmp_path / "bad.csv"
    csv_path.write_text(content)
    with pytest.raises(UserError, match=None) as info:
        fit_cost_table(csv_path)
    assert message in str(info.value)
    result = runner.invoke(app, ["calibrate", str(csv_path), "--out", str(tmp_path / "o.yaml")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [f"error: {info.value}"]  # one line, no traceback
    assert not (tmp_path / "o.yaml").exists()


def test_calibrate_missing_file_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["calibrate", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2
    assert "not found" in result.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("intercept_s: 0.1\ncoefficients: {n_pions: 1.0}\n", "unknown features ['n_pions']"),
        ("coefficients: {n_particles: 1.0}\n", "intercept_s"),
        ("intercept_s: abc\ncoefficients: {}\n", "intercept_s"),
        ("[1, 2]\n", "must hold a mapping"),
        ("intercept_s: 0.1\ncoefficients: {}\ntype_scale: {bbar: 2}\n", "type_scale"),
        ("kind: other\nintercept_s: 0.1\ncoefficients: {}\n", "kind/version"),
        ("intercept_s: -1\ncoefficients: {}\n", "mean t_slow"),
    ],
)
def test_bad_cost_file_is_a_user_error(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "cost.yaml"
    path.write_text(content)
    with pytest.raises(UserError) as info:
        CostModel.from_config(BackendConfig(cost=CostConfig(file=path)))
    assert message in str(info.value)


def test_missing_cost_file_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="not found"):
        CostModel.from_config(BackendConfig(cost=CostConfig(file=tmp_path / "absent.yaml")))


def test_type_scale_multiplies_slow_cost(tmp_path: Path) -> None:
    path = tmp_path / "cost.yaml"
    path.write_text("intercept_s: 0.1\ncoefficients: {n_particles: 0.01}\ntype_scale: {uubar: 3}\n")
    model = CostModel.from_config(BackendConfig(cost=CostConfig(file=path)))
    event = one_event([211, 211], [-1, -1], [(1, 0, 0), (0, 1, 0)])  # a uubar event
    assert model.slow_cost(event)[0] == pytest.approx(3 * (0.1 + 0.02))
    assert math.isfinite(model.mean_times[2])


def test_shipped_default_cost_file_matches_built_in() -> None:
    # sims/cost-default.yaml documents the built-in model in the file format (6 digits).
    shipped = Path(__file__).resolve().parents[1] / "sims" / "cost-default.yaml"
    from_file = CostModel.from_config(BackendConfig(cost=CostConfig(file=shipped)))
    built_in = CostModel.from_config(BackendConfig())
    assert from_file.mean_times == pytest.approx(built_in.mean_times, rel=1e-5)
    assert dict(from_file.coefficients) == pytest.approx(dict(built_in.coefficients), rel=1e-5)
