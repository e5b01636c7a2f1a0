"""Tree baseline: a gradient-boosted classifier per skim on ~50 hand-written event features.

The yardstick every filter network is compared with: what a physicist builds in an afternoon.
Features (generator level, CMS frame via the Υ(4S) boost of the emulator's `Beams`):
multiplicities (all, final state, charged tracks in the CDC acceptance, photons in the ECL,
leptons, kaons, protons, neutrinos), leading and second lepton/track/photon momenta, visible
energy in acceptance and missing momentum, counts and leading momenta of K_S, π0, η, D0, D+,
D_s, D*+, D*0, J/ψ, φ, Λ, K_L, B and τ in the decay tree, event shapes (Fox-Wolfram R2,
sphericity, aplanarity, thrust about the sphericity axis) and the background type.

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
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.backends.emulator.cost import CostModel
from adaptive_bkg.backends.emulator.skims import Beams
from adaptive_bkg.config import load_config
from adaptive_bkg.formats.events import EventBatch
from adaptive_bkg.generators.truth import final_state_mask, pdg_charge
from adaptive_bkg.stats.metrics import weighted_auc
from adaptive_bkg.workflows.bayes_limit import scored_speedup

F64 = NDArray[np.float64]
CDC_THETA = (math.radians(17.0), math.radians(150.0))
ECL_THETA = (math.radians(12.4), math.radians(155.1))
TREE_PARTICLES: dict[str, int] = {
    "ks": 310,
    "pi0": 111,
    "eta": 221,
    "d0": 421,
    "dplus": 411,
    "ds": 431,
    "dstar_plus": 413,
    "dstar0": 423,
    "jpsi": 443,
    "phi": 333,
    "lambda": 3122,
    "kl": 130,
    "b_charged": 521,
    "b0": 511,
    "tau": 15,
}
MOMENTUM_OF = ("ks", "pi0", "d0", "dplus", "dstar_plus", "jpsi", "phi")


def _per_event(index: NDArray[np.int64], values: F64, n: int) -> F64:
    return np.bincount(index, weights=values, minlength=n).astype(np.float64)


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
    """[n, F] float64 feature matrix and the feature names (see the module docstring)."""
    beams = beams or Beams()
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
    neutrino = np.isin(apdg, (12, 14, 16))
    in_cdc = (theta > CDC_THETA[0]) & (theta < CDC_THETA[1])
    in_ecl = (theta > ECL_THETA[0]) & (theta < ECL_THETA[1])
    track = final & charged & in_cdc & (pt > 0.1)
    photon = final & (apdg == 22) & in_ecl & (e > 0.05)
    lepton = track & np.isin(apdg, (11, 13))
    visible = final & ~neutrino & (track | (in_ecl & ~charged))
    cols: dict[str, F64] = {}
    one = np.ones_like(e)
    cols["n_particles"] = batch.n_particles.astype(np.float64)
    cols["n_final"] = _per_event(ev, final * one, n)
    cols["n_tracks"] = _per_event(ev, track * one, n)
    cols["n_photons"] = _per_event(ev, photon * one, n)
    cols["n_photons_1gev"] = _per_event(ev, (photon & (e_cm > 1.0)) * one, n)
    cols["n_electrons"] = _per_event(ev, (track & (apdg == 11)) * one, n)
    cols["n_muons"] = _per_event(ev, (track & (apdg == 13)) * one, n)
    cols["n_kaons"] = _per_event(ev, (track & (apdg == 321)) * one, n)
    cols["n_protons"] = _per_event(ev, (track & (apdg == 2212)) * one, n)
    cols["n_neutrinos"] = _per_event(ev, (final & neutrino) * one, n)
    cols["net_charge"] = _per_event(ev, np.where(track, pdg_charge(batch.pdg), 0.0), n)
    for name, mask in (
        ("lepton", lepton),
        ("electron", track & (apdg == 11)),
        ("muon", track & (apdg == 13)),
        ("track", track),
        ("photon", photon),
    ):
        values = e_cm if name == "photon" else p_cm
        cols[f"p1_{name}"], cols[f"p2_{name}"] = _top2(ev, values, mask, n)
    cols["sum_p_tracks"] = _per_event(ev, np.where(track, p_cm, 0.0), n)
    cols["sum_e_photons"] = _per_event(ev, np.where(photon, e_cm, 0.0), n)
    cols["e_vis"] = _per_event(ev, np.where(visible, e_cm, 0.0), n)
    cols["e_vis_all"] = _per_event(ev, np.where(final & ~neutrino, e_cm, 0.0), n)
    miss = [_per_event(ev, np.where(visible, -c, 0.0), n) for c in (px_cm, py_cm, pz_cm)]
    cols["p_miss"] = np.sqrt(miss[0] ** 2 + miss[1] ** 2 + miss[2] ** 2)
    cols["cos_miss"] = np.where(cols["p_miss"] > 0, miss[2] / np.maximum(cols["p_miss"], 1e-12), 0)
    cols["e_lab_max_track"] = _top2(ev, p_lab, track, n)[0]
    for name, code in TREE_PARTICLES.items():
        mask = apdg == code
        cols[f"n_{name}"] = _per_event(ev, mask * one, n)
        if name in MOMENTUM_OF:
            cols[f"p1_{name}"] = _top2(ev, p_cm, mask, n)[0]
    # Event shapes of the visible final state: linearised momentum tensor T_ab = Σ p_a p_b/|p|.
    w = np.where(visible & (p_cm > 0), 1.0 / np.maximum(p_cm, 1e-12), 0.0)
    comps = (px_cm, py_cm, pz_cm)
    tensor = np.zeros((n, 3, 3))
    for a in range(3):
        for b in range(a, 3):
            tensor[:, a, b] = tensor[:, b, a] = _per_event(ev, w * comps[a] * comps[b], n)
    sum_p = _per_event(ev, np.where(visible, p_cm, 0.0), n)
    safe = np.maximum(sum_p, 1e-12)
    # Fox-Wolfram: Σ_ij |p_i||p_j| P2(cos θ_ij) = 1.5·||T||² − 0.5·(Σ|p|)²
    cols["r2"] = np.where(
        sum_p > 0, (1.5 * np.sum(tensor**2, axis=(1, 2)) - 0.5 * sum_p**2) / safe**2, 0.0
    )
    eigval, eigvec = np.linalg.eigh(tensor / safe[:, None, None])  # ascending
    cols["sphericity"] = 1.5 * (eigval[:, 0] + eigval[:, 1])
    cols["aplanarity"] = 1.5 * eigval[:, 0]
    axis = eigvec[:, :, 2]  # leading eigenvector
    proj = np.abs(px_cm * axis[ev, 0] + py_cm * axis[ev, 1] + pz_cm * axis[ev, 2])
    cols["thrust"] = _per_event(ev, np.where(visible, proj, 0.0), n) / safe
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
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
    }


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


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
