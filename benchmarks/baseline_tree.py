"""Tree baseline: a gradient-boosted classifier per skim on ~50 hand-written event features.

The yardstick every filter network is compared with: what a physicist builds in an afternoon.
Features (generator level, in the CMS frame of the configured beams, `physics.beams`):
multiplicities (all, final state, charged tracks in the CDC acceptance, photons in the ECL,
leptons, kaons, protons, neutrinos), leading and second lepton/track/photon momenta, visible
energy in acceptance and missing momentum, counts and leading momenta of K_S, π0, η, D0, D+,
D_s, D*+, D*0, J/ψ, φ, Λ, K_L, B and τ in the decay tree, event shapes (Fox-Wolfram R2,
sphericity, aplanarity, thrust about the sphericity axis; `physics.shapes`) and the background
type.

Per skim, scikit-learn's `HistGradientBoostingClassifier` is trained on the first
`--train` events and scored on the last `--test` events of one labelled file, with the same
figure of merit as `adaptive-bkg finetune`: AUC, and the expected speedup of the sqrt-optimal
policy fitted on the test q, scored on the test labels (± bootstrap over test events). The
shipped transformer (part-small) is scored on the same test events, for the skims it has heads
for.

    .venv/bin/adaptive-bkg label --events 150000 --seed 21 \\
        --skims leptonic-untagged,fei-hadronic,dstar-d0pi,radiative --out lab150k.parquet
    .venv/bin/python benchmarks/baseline_tree.py --data lab150k.parquet --train 120000 \\
        --test 30000 --out benchmarks/results/baseline_tree.json

Needs the `bench` extra (scikit-learn).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _machine import describe
from numpy.typing import NDArray

from adaptive_bkg.backends.emulator.cost import CostModel
from adaptive_bkg.config import GeneratorConfig, load_config
from adaptive_bkg.formats.events import EventBatch
from adaptive_bkg.generators.truth import final_state_mask, pdg_charge
from adaptive_bkg.physics.beams import Beams
from adaptive_bkg.physics.geometry import BELLE2_ACCEPTANCE
from adaptive_bkg.physics.pdg import NEUTRINOS, PDG
from adaptive_bkg.physics.shapes import (
    aplanarity,
    event_sums,
    fox_wolfram_r2,
    momentum_tensor,
    sphericity,
    sphericity_axes,
    thrust_about,
)
from adaptive_bkg.stats.limit_estimate import scored_speedup
from adaptive_bkg.stats.metrics import weighted_auc

F64 = NDArray[np.float64]
# The detector's one acceptance definition (physics/geometry.py); the ECL as its envelope.
CDC_THETA = tuple(math.radians(t) for t in BELLE2_ACCEPTANCE.cdc_theta_deg)
ECL_THETA = tuple(math.radians(t) for t in BELLE2_ACCEPTANCE.ecl_envelope_deg)
TREE_PARTICLES: dict[str, int] = {
    "ks": PDG.K_S0,
    "pi0": PDG.PI0,
    "eta": PDG.ETA,
    "d0": PDG.D0,
    "dplus": PDG.D_PLUS,
    "ds": PDG.D_S_PLUS,
    "dstar_plus": PDG.D_STAR_PLUS,
    "dstar0": PDG.D_STAR0,
    "jpsi": PDG.J_PSI,
    "phi": PDG.PHI,
    "lambda": PDG.LAMBDA,
    "kl": PDG.K_L0,
    "b_charged": PDG.B_PLUS,
    "b0": PDG.B0,
    "tau": PDG.TAU_MINUS,
}
MOMENTUM_OF = ("ks", "pi0", "d0", "dplus", "dstar_plus", "jpsi", "phi")


def _top2(
    index: NDArray[np.int64], values: F64, mask: NDArray[np.bool_], n: int
) -> tuple[F64, F64]:
    """Largest and second-largest value per event among masked particles (0 where none)."""
    idx, val = index[mask], values[mask]
    order = np.lexsort((-val, idx))  # by event, then descending value
    idx, val = idx[order], val[order]
    first = np.zeros(n)
    second = np.zeros(n)
    if idx.size:
        starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
        first[idx[starts]] = val[starts]
        nxt = starts + 1
        ok = (nxt < idx.size) & (idx[np.minimum(nxt, idx.size - 1)] == idx[starts])
        second[idx[starts[ok]]] = val[nxt[ok]]
    return first, second


def event_features(batch: EventBatch, beams: Beams | None = None) -> tuple[F64, tuple[str, ...]]:
    """[n, F] float64 feature matrix and the feature names (see the module docstring); beams:
    None = the configuration's default beams."""
    beams = beams or Beams.of(GeneratorConfig())
    n = len(batch)
    ev = batch.particle_event_index
    e, px, py, pz = (
        np.asarray(a, dtype=np.float64) for a in (batch.E, batch.px, batch.py, batch.pz)
    )
    e_cm, px_cm, py_cm, pz_cm = beams.to_cms(e, px, py, pz)
    p_cm = np.sqrt(px_cm**2 + py_cm**2 + pz_cm**2)
    p_lab = np.sqrt(px**2 + py**2 + pz**2)
    pt = np.hypot(px, py)
    theta = np.arctan2(pt, pz)
    apdg = np.abs(batch.pdg.astype(np.int64))
    final = final_state_mask(batch)
    charged = pdg_charge(batch.pdg) != 0
    neutrino = np.isin(apdg, NEUTRINOS)
    in_cdc = (theta > CDC_THETA[0]) & (theta < CDC_THETA[1])
    in_ecl = (theta > ECL_THETA[0]) & (theta < ECL_THETA[1])
    track = final & charged & in_cdc & (pt > 0.1)
    photon = final & (apdg == PDG.GAMMA) & in_ecl & (e > 0.05)
    electron, muon = PDG.E_MINUS, PDG.MU_MINUS
    lepton = track & np.isin(apdg, (electron, muon))
    visible = final & ~neutrino & (track | (in_ecl & ~charged))
    cols: dict[str, F64] = {}
    one = np.ones_like(e)
    cols["n_particles"] = batch.n_particles.astype(np.float64)
    cols["n_final"] = event_sums(ev, final * one, n)
    cols["n_tracks"] = event_sums(ev, track * one, n)
    cols["n_photons"] = event_sums(ev, photon * one, n)
    cols["n_photons_1gev"] = event_sums(ev, (photon & (e_cm > 1.0)) * one, n)
    cols["n_electrons"] = event_sums(ev, (track & (apdg == electron)) * one, n)
    cols["n_muons"] = event_sums(ev, (track & (apdg == muon)) * one, n)
    cols["n_kaons"] = event_sums(ev, (track & (apdg == PDG.K_PLUS)) * one, n)
    cols["n_protons"] = event_sums(ev, (track & (apdg == PDG.PROTON)) * one, n)
    cols["n_neutrinos"] = event_sums(ev, (final & neutrino) * one, n)
    cols["net_charge"] = event_sums(ev, np.where(track, pdg_charge(batch.pdg), 0.0), n)
    for name, mask in (
        ("lepton", lepton),
        ("electron", track & (apdg == electron)),
        ("muon", track & (apdg == muon)),
        ("track", track),
        ("photon", photon),
    ):
        values = e_cm if name == "photon" else p_cm
        cols[f"p1_{name}"], cols[f"p2_{name}"] = _top2(ev, values, mask, n)
    cols["sum_p_tracks"] = event_sums(ev, np.where(track, p_cm, 0.0), n)
    cols["sum_e_photons"] = event_sums(ev, np.where(photon, e_cm, 0.0), n)
    cols["e_vis"] = event_sums(ev, np.where(visible, e_cm, 0.0), n)
    cols["e_vis_all"] = event_sums(ev, np.where(final & ~neutrino, e_cm, 0.0), n)
    miss = [event_sums(ev, np.where(visible, -c, 0.0), n) for c in (px_cm, py_cm, pz_cm)]
    cols["p_miss"] = np.sqrt(miss[0] ** 2 + miss[1] ** 2 + miss[2] ** 2)
    cols["cos_miss"] = np.where(cols["p_miss"] > 0, miss[2] / np.maximum(cols["p_miss"], 1e-12), 0)
    cols["e_lab_max_track"] = _top2(ev, p_lab, track, n)[0]
    for name, code in TREE_PARTICLES.items():
        mask = apdg == code
        cols[f"n_{name}"] = event_sums(ev, mask * one, n)
        if name in MOMENTUM_OF:
            cols[f"p1_{name}"] = _top2(ev, p_cm, mask, n)[0]
    # Event shapes of the visible final state (particles with p > 0 in the tensor).
    sel = visible & (p_cm > 0)
    ev_s, px_s, py_s, pz_s = ev[sel], px_cm[sel], py_cm[sel], pz_cm[sel]
    tensor = momentum_tensor(ev_s, px_s, py_s, pz_s, p_cm[sel], n)
    sum_p = event_sums(ev, np.where(visible, p_cm, 0.0), n)
    cols["r2"] = fox_wolfram_r2(tensor, sum_p)
    eigval, eigvec = sphericity_axes(tensor, sum_p)  # ascending
    cols["sphericity"] = sphericity(eigval)
    cols["aplanarity"] = aplanarity(eigval)
    axis = eigvec[:, :, 2]  # leading eigenvector
    cols["thrust"] = thrust_about(ev_s, px_s, py_s, pz_s, axis, sum_p)
    cols["cos_thrust_axis"] = np.abs(axis[:, 2])
    cols["bkg_type"] = batch.bkg_type.astype(np.float64)
    names = tuple(cols)
    return np.stack([cols[k] for k in names], axis=1), names


@dataclass(frozen=True)
class SkimRow:
    skim: str
    pass_rate: float
    n_test_pass: int
    tree_auc: float
    tree_speedup: float
    tree_speedup_err: float
    transformer_auc: float | None
    transformer_speedup: float | None
    transformer_speedup_err: float | None
    oracle: float
    train_s: float


def run(
    data: Path, n_train: int, n_test: int, n_bootstrap: int, seed: int, transformer: bool
) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier

    from adaptive_bkg.formats.labelled import read_labelled
    from adaptive_bkg.stats.speedup import oracle_speedup

    labelled = read_labelled(data)
    if len(labelled) < n_train + n_test:
        raise SystemExit(f"{data} has {len(labelled)} events, fewer than --train + --test")
    train = labelled.take(np.arange(n_train))
    test = labelled.take(np.arange(len(labelled) - n_test, len(labelled)))
    start = time.perf_counter()
    x_train, names = event_features(train.batch)
    x_test, _ = event_features(test.batch)
    features_s = time.perf_counter() - start
    cfg = load_config(None, [])
    times = CostModel.from_config(cfg.backend).mean_times
    p_min = cfg.policy.p_min
    q_nn: dict[str, NDArray[np.float64]] = {}
    if transformer:
        from adaptive_bkg.checkpoints import default_checkpoint
        from adaptive_bkg.model.checkpoint import load_checkpoint
        from adaptive_bkg.model.predict import predict_q

        model = load_checkpoint(default_checkpoint("part-small")).model
        q_all = predict_q(model, test.batch)
        q_nn = {k: q_all[:, i] for i, k in enumerate(model.skims)}
    rng = np.random.default_rng(seed)
    rows = []
    for s, skim in enumerate(labelled.skims):
        y_train, y_test = train.labels[:, s], test.labels[:, s]
        t0 = time.perf_counter()
        clf = HistGradientBoostingClassifier(max_iter=300, learning_rate=0.1, random_state=seed)
        clf.fit(x_train, y_train)
        train_s = time.perf_counter() - t0
        q = clf.predict_proba(x_test)[:, 1]
        tree = scored_speedup(q, y_test, times, p_min, n_bootstrap, rng)
        nn = (
            scored_speedup(q_nn[skim], y_test, times, p_min, n_bootstrap, rng)
            if skim in q_nn
            else None
        )
        rows.append(
            SkimRow(
                skim=skim,
                pass_rate=float(y_test.mean()),
                n_test_pass=int(y_test.sum()),
                tree_auc=weighted_auc(q, y_test),
                tree_speedup=tree.value,
                tree_speedup_err=tree.error,
                transformer_auc=weighted_auc(q_nn[skim], y_test) if nn else None,
                transformer_speedup=nn.value if nn else None,
                transformer_speedup_err=nn.error if nn else None,
                oracle=oracle_speedup(float(y_test.mean()), *times),
                train_s=train_s,
            )
        )
        print(markdown_row(rows[-1]), flush=True)
    return {
        "benchmark": "tree baseline (HistGradientBoostingClassifier) vs shipped part-small",
        "data": str(data),
        "n_train": n_train,
        "n_test": n_test,
        "n_features": len(names),
        "features": list(names),
        "feature_s": features_s,
        "times": list(times),
        "p_min": p_min,
        "n_bootstrap": n_bootstrap,
        "skims": [asdict(r) for r in rows],
        "machine": describe(),
    }


def markdown_row(r: SkimRow) -> str:
    nn = (
        f"{r.transformer_auc:.3f} / {r.transformer_speedup:.2f} ± {r.transformer_speedup_err:.2f}"
        if r.transformer_speedup is not None and r.transformer_auc is not None
        else "–"
    )
    return (
        f"| {r.skim} | {100 * r.pass_rate:.2f} % | {nn} | {r.tree_auc:.3f} / "
        f"{r.tree_speedup:.2f} ± {r.tree_speedup_err:.2f} | {r.oracle:.1f} | {r.train_s:.0f} s |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="labelled-events file")
    parser.add_argument("--train", type=int, default=120_000)
    parser.add_argument("--test", type=int, default=30_000)
    parser.add_argument("--bootstrap", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-transformer", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    print("| skim | pass rate | part-small AUC / speedup | tree AUC / speedup | oracle | fit |")
    print("|---|---|---|---|---|---|")
    result = run(
        args.data, args.train, args.test, args.bootstrap, args.seed, not args.no_transformer
    )
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
