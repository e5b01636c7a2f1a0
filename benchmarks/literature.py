"""Against the literature: the setting of references/yu2022 with our shipped model.

yu2022 (Yu, Hartmann, Schinnerl, Kuhr, 2022; backup "Speedup rate"): a skim with retention
r = 0.05, stage times t_gen = 0.08 ms, t_NN = 0.63 ms, t_SR = 97.04 ms; their GAT+GAP network
reaches AUC 0.912 and, with unbiased sampling (keep with probability p, weight 1/p), a speedup
of about 2.0 (6.5 with the biased reweighting method). Their skims are FEI (hadronic B tagging)
skims on generic B events.

Here, on held-out emulator events labelled by `adaptive-bkg label` (never seen in training):

- `fei-union-bbbar` (the closest analogue): B B̄ events (`--types charged,mixed`), labelled
  for fei-hadronic and fei-semileptonic; the skim is their union (an event passes if either
  passes), retention ≈ 5 %. The shipped part-small has a head for each: the union score is
  s = 1 − (1 − q_had)(1 − q_sl), calibrated by isotonic regression on the first half of the
  events; AUC, expected and measured speedup on the second half.
- `low-mult-2trk` on the generic mixture (a single catalogue skim at 6.4 %): q = sigmoid(logit)
  of its head, calibrated the same way.

Per setting: AUC; the expected speedup of the sqrt-optimal policy (fitted on the test q, no
labels) scored on the test labels, ± bootstrap over events; the measured speedup of one
production-like pass over the test events (keep ~ Bernoulli(p), `RunAccumulator`) ± its
delta-method σ, and the mean over `--draws` such passes; giesegh2025's closed form from the
test events' confusion fractions (a check: equals the expected speedup); the oracle
t3/(t2 + r·t_SR). Times are yu2022's (constant per event).

    .venv/bin/adaptive-bkg label -n 40000 --types charged,mixed --seed 51 \\
        --skims fei-hadronic,fei-semileptonic -o bbbar40k.parquet
    .venv/bin/adaptive-bkg label -n 20000 --seed 52 --skims low-mult-2trk -o generic20k.parquet
    .venv/bin/python benchmarks/literature.py --bbbar bbbar40k.parquet \\
        --generic generic20k.parquet --out benchmarks/results/literature.json

Prose and the comparison's caveats: docs/literature.md.
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

from adaptive_bkg.formats.labelled import LabelledEvents
from adaptive_bkg.stats.calibration import Calibrator
from adaptive_bkg.stats.limit_estimate import scored_speedup
from adaptive_bkg.stats.metrics import RunAccumulator, weighted_auc
from adaptive_bkg.stats.policy_fit import fit_sqrt_k
from adaptive_bkg.stats.speedup import (
    confusion_fractions,
    expected_speedup,
    oracle_speedup,
    speedup_closed_form,
)

F64 = NDArray[np.float64]
MS = 1e-3
YU2022_TIMES = (0.08 * MS, 0.63 * MS, 97.04 * MS)  # t_gen, t_NN, t_SR in seconds
YU2022 = {
    "reference": "references/yu2022_smart_bkg_gnn_importance_sampling.md",
    "retention": 0.05,
    "times_ms": [0.08, 0.63, 97.04],
    "auc": 0.912,  # GAT+GAP (gen); GCN/GAT variants 0.908-0.909
    "speedup_sampling": 2.0,  # unbiased sampling method ("No bias 2.0")
    "speedup_reweighting": 6.5,  # biased reweighting method ("Potential residual bias")
    "oracle": oracle_speedup(0.05, *YU2022_TIMES),
    "skims": "FEI skims on generic B events (Belle II MC, basf2 sim + reco)",
    "training": "0.9M training / 0.1M validation / 0.5M test events",
}


@dataclass(frozen=True)
class SettingResult:
    name: str
    description: str
    n_calibration: int
    n_test: int
    n_test_pass: int
    retention: float
    auc: float
    expected_speedup: float
    expected_speedup_err: float  # bootstrap over test events, k refitted
    measured_speedup: float  # one keep draw over the test events
    measured_speedup_err: float  # its delta-method σ
    measured_speedup_mean: float  # mean over the draws
    measured_speedup_spread: float  # standard deviation over the draws
    closed_form: float  # giesegh2025 from the test events' expected confusion fractions
    identity_speedup: float  # p = clip(q, p_min, 1): "NN output as keep probability"
    identity_speedup_err: float
    oracle: float
    k: float
    mean_p: float
    scoring_s: float


def _model_q(
    data: LabelledEvents, skims: tuple[str, ...], cache: Path | None = None
) -> tuple[F64, float]:
    """The shipped part-small's q = sigmoid(logit) for `skims` [n, len(skims)], and its CPU
    seconds; `cache` (an .npz) keeps them for a re-run of the statistics."""
    if cache is not None and cache.exists():
        stored = np.load(cache)
        return np.asarray(stored["q"]), float(stored["scoring_s"])
    from adaptive_bkg.checkpoints import default_checkpoint  # torch: only when scoring
    from adaptive_bkg.model.checkpoint import load_checkpoint
    from adaptive_bkg.model.predict import predict_q

    model = load_checkpoint(default_checkpoint("part-small")).model
    start = time.process_time()
    q = predict_q(model, data.batch)
    columns = [model.skims.index(s) for s in skims]
    q, seconds = q[:, columns], time.process_time() - start
    if cache is not None:
        np.savez(cache, q=q, scoring_s=seconds)
    return q, seconds


def _logit(p: F64) -> F64:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.asarray(np.log(p) - np.log1p(-p))


def evaluate(
    name: str,
    description: str,
    score: F64,
    labels: NDArray[np.bool_],
    scoring_s: float,
    draws: int,
    n_bootstrap: int,
    seed: int,
) -> SettingResult:
    """score [n] (uncalibrated probability) and labels [n]: first half calibrates, second tests."""
    half = len(labels) // 2
    calibrator = Calibrator("isotonic").fit(_logit(score[:half]), labels[:half])
    q = calibrator.apply(_logit(score[half:])).reshape(-1)
    y = labels[half:]
    times = YU2022_TIMES
    p_min = 0.01
    rng = np.random.default_rng(seed)
    expected = scored_speedup(q, y, times, p_min, n_bootstrap, rng)
    k = fit_sqrt_k(q, *times, p_min)
    p = np.clip(k * np.sqrt(q), p_min, 1.0)
    assert math.isclose(expected.value, expected_speedup(y.astype(float), p, *times), rel_tol=1e-9)
    measured = []
    for _ in range(draws):
        kept = rng.random(len(p)) < p
        acc = RunAccumulator([name])
        acc.add(kept, p, y[:, None], times[0], times[1], times[2])
        measured.append(acc.summary().skims[name])
    p_identity = np.clip(q, p_min, 1.0)
    identity = [expected_speedup(y.astype(float), p_identity, *times)]
    for _ in range(n_bootstrap):
        i = rng.integers(0, len(y), len(y))
        identity.append(expected_speedup(y[i].astype(float), p_identity[i], *times))
    first = measured[0]
    values = np.array([m.speedup for m in measured])
    return SettingResult(
        name=name,
        description=description,
        n_calibration=half,
        n_test=len(y),
        n_test_pass=int(y.sum()),
        retention=float(y.mean()),
        auc=weighted_auc(q, y),
        expected_speedup=expected.value,
        expected_speedup_err=expected.error,
        measured_speedup=first.speedup,
        measured_speedup_err=first.speedup_err,
        measured_speedup_mean=float(values.mean()),
        measured_speedup_spread=float(values.std(ddof=1)) if draws > 1 else math.nan,
        closed_form=speedup_closed_form(*confusion_fractions(y, p), *times),
        identity_speedup=identity[0],
        identity_speedup_err=float(np.std(identity[1:], ddof=1)),
        oracle=oracle_speedup(float(y.mean()), *times),
        k=k,
        mean_p=float(p.mean()),
        scoring_s=scoring_s,
    )


def _cache(data: Path) -> Path:
    return data.with_name(data.name + ".part-small-q.npz")


def run(
    bbbar: Path, generic: Path | None, draws: int, n_bootstrap: int, seed: int
) -> dict[str, Any]:
    from adaptive_bkg.formats.labelled import read_labelled

    results = []
    data = read_labelled(bbbar, ["fei-hadronic", "fei-semileptonic"])
    q, scoring_s = _model_q(data, ("fei-hadronic", "fei-semileptonic"), _cache(bbbar))
    union_score = 1.0 - (1.0 - q[:, 0]) * (1.0 - q[:, 1])
    union_label = data.labels.any(axis=1)
    results.append(
        evaluate(
            "fei-union-bbbar",
            "fei-hadronic OR fei-semileptonic on B B-bar events (charged + mixed); score "
            "1 - (1 - q_had)(1 - q_sl) of the shipped part-small, isotonic-calibrated",
            union_score,
            union_label,
            scoring_s,
            draws,
            n_bootstrap,
            seed,
        )
    )
    if generic is not None:
        data = read_labelled(generic, ["low-mult-2trk"])
        q, scoring_s = _model_q(data, ("low-mult-2trk",), _cache(generic))
        results.append(
            evaluate(
                "low-mult-2trk",
                "low-mult-2trk on the generic mixture (all seven types by cross section); "
                "its part-small head, isotonic-calibrated",
                q[:, 0],
                data.labels[:, 0],
                scoring_s,
                draws,
                n_bootstrap,
                seed + 1,
            )
        )
    return {
        "benchmark": "yu2022 setting: ~5 % retention, t_gen : t_NN : t_SR = 0.08 : 0.63 : 97.04 ms",
        "yu2022": YU2022,
        "data": {"bbbar": str(bbbar), "generic": str(generic) if generic else None},
        "times_s": list(YU2022_TIMES),
        "p_min": 0.01,
        "policy": "sqrt-optimal, k fitted on the test q (no labels)",
        "draws": draws,
        "n_bootstrap": n_bootstrap,
        "settings": [asdict(r) for r in results],
        "machine": {"python": platform.python_version()},
    }


def markdown_row(r: dict[str, Any]) -> str:
    return (
        f"| {r['name']} | {100 * r['retention']:.2f} % ({r['n_test_pass']}) | {r['auc']:.3f} | "
        f"{r['expected_speedup']:.2f} ± {r['expected_speedup_err']:.2f} | "
        f"{r['measured_speedup']:.2f} ± {r['measured_speedup_err']:.2f} "
        f"(mean of draws {r['measured_speedup_mean']:.2f}, spread "
        f"{r['measured_speedup_spread']:.2f}) | {r['closed_form']:.2f} | "
        f"{r['identity_speedup']:.2f} ± {r['identity_speedup_err']:.2f} | {r['oracle']:.1f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bbbar", type=Path, required=True, help="labelled B B-bar events")
    parser.add_argument("--generic", type=Path, default=None, help="labelled generic events")
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--bootstrap", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    result = run(args.bbbar, args.generic, args.draws, args.bootstrap, args.seed)
    print("| setting | retention (test passing) | AUC | expected speedup | measured | closed form "
          "| p = q | oracle |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    ref = result["yu2022"]
    print(
        f"| yu2022 (GAT+GAP, FEI) | 5 % | {ref['auc']:.3f} | ≈ {ref['speedup_sampling']:.1f} "
        f"| – | – | – | {ref['oracle']:.1f} |"
    )
    for row in result["settings"]:
        print(markdown_row(row))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2, allow_nan=True) + "\n")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
