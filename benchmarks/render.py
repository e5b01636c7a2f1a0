"""Renders docs/benchmarks.md from its template (benchmarks/templates/benchmarks.md) and the
JSON results in benchmarks/results/: every `{{name}}` or `{{name:argument}}` in the template
is replaced by the table that `SECTIONS[name]` makes from the results. A result that is not
there is shown as "not measured", never invented.

    .venv/bin/python benchmarks/run_all.py --render-only          # the usual way
    .venv/bin/python benchmarks/render.py --results DIR --out FILE
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _machine import label

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TEMPLATE = ROOT / "benchmarks" / "templates" / "benchmarks.md"
DOC = ROOT / "docs" / "benchmarks.md"
NOT_MEASURED = "not measured"
STRATEGIES = ("no-filter", "two-step", "static", "no-learn", "adaptive")


def load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / name
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def machine_of(data: dict[str, Any]) -> dict[str, Any] | None:
    """The machine block of any benchmark's JSON (older files used other keys)."""
    for key in ("machine", "host"):
        if isinstance(data.get(key), dict):
            return data[key]
    if "cpus" in data or "python" in data:
        return {"cpus": data.get("cpus"), "python": data.get("python")}
    return None


def num(x: Any, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    return f"{x:.{digits}f}"


def pm(value: Any, err: Any, digits: int = 2) -> str:
    """value ± err, with enough decimals that the error shows two significant digits (≤ 3)."""
    if err is None or (isinstance(err, float) and not math.isfinite(err)):
        return f"{num(value, digits)} (± not measured)"
    if 0 < err < 1:
        digits = max(digits, min(3, 1 - math.floor(math.log10(err))))
    return f"{num(value, digits)} ± {num(err, digits)}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def quick_note(data: dict[str, Any]) -> str:
    return " **(quick mode: toy sizes, the figures mean nothing)**" if data.get("quick") else ""


# ---------------------------------------------------------------------------------------------
def machines(results: Path, _: str) -> str:
    rows = []
    for path in sorted(results.glob("*.json")):
        data = load(results, path.name)
        if data is None:
            continue
        rows.append(
            [
                f"`{path.name}`",
                label(machine_of(data)),
                "quick (toy)" if data.get("quick") else "full",
            ]
        )
    if not rows:
        return NOT_MEASURED
    return table(["result", "machine", "mode"], rows)


def _model_rows(results: Path, mode: str, stage: str) -> list[list[str]]:
    rows = []
    for path in sorted(results.glob("model-*.json")):
        data = load(results, path.name) or {}
        machine = machine_of(data) or {}
        gpu = machine.get("gpu")
        for r in data.get("rows", []):
            if r.get("mode") != mode:
                continue
            device = r["device"] + (f" ({gpu})" if gpu and r["device"].startswith("cuda") else "")
            cmd = f"`benchmarks/model.py --device {r['device']}`" + quick_note(data)
            rows.append(
                [
                    f"{stage}, {r['preset']} ({r.get('dtype', 'fp32')}, batch {r['batch_size']})",
                    device,
                    f"{num(r['events_per_s'], 0)} (one timing of {r['events']} events; ± not "
                    f"measured)",
                    cmd,
                    label(machine),
                ]
            )
    return rows


def stage_throughput(results: Path, _: str) -> str:
    rows: list[list[str]] = []
    stages = load(results, "stages.json")
    for key, name in (
        ("generator", "generator (Pythia mixture)"),
        ("labelled_build", "labelled-dataset build (generate + emulate + write, 4 skims)"),
    ):
        if stages and "repeats_cpu" in stages.get(key, {}):
            s = stages[key]
            n = len(s["repeats_cpu"])
            init = ", initialisation included" if s.get("includes_init") else ""
            rows.append(
                [
                    name,
                    "cpu, 1 core",
                    f"{pm(s['events_per_cpu_s'], s['events_per_cpu_s_sd'], 0)} per CPU-s (mean ± "
                    f"sd of {n} × {s['events']:,} events{init}); {num(s['events_per_wall_s'], 0)}"
                    " per wall-s",
                    f"`{stages.get('command', 'benchmarks/stages.py')}`" + quick_note(stages),
                    label(machine_of(stages)),
                ]
            )
        else:
            earlier = " (earlier hand-made figures: docs/generator.md, docs/training.md)"
            rows.append([name, "cpu", NOT_MEASURED + earlier, "`benchmarks/stages.py`", "–"])
    emu = load(results, "emulator.json")
    if emu:
        cpu = emu["events_per_cpu_s"]["detector_and_all_skims"]
        wall = emu["events_per_wall_s"]["detector_and_all_skims"]
        rows.append(
            [
                f"emulator (detector + {len(emu['skims'])} skims)",
                "cpu, 1 core",
                f"{num(cpu, 0)} per CPU-s, {num(wall, 0)} per wall-s (best of repeats; ± not "
                "measured)",
                f"`benchmarks/emulator.py --events {emu['events']}`" + quick_note(emu),
                label(machine_of(emu)),
            ]
        )
    else:
        rows.append(["emulator", "cpu", NOT_MEASURED, "`benchmarks/emulator.py`", "–"])
    rows += _model_rows(results, "infer", "filter inference") or [
        ["filter inference", "cpu", NOT_MEASURED, "`benchmarks/model.py`", "–"]
    ]
    rows += _model_rows(results, "train", "learner training") or [
        ["learner training", "cpu", NOT_MEASURED, "`benchmarks/model.py`", "–"]
    ]
    if not list(results.glob("model-cuda*.json")):
        rows.append(
            [
                "filter / learner on GPU",
                "cuda",
                NOT_MEASURED + " (no model-cuda.json: run `benchmarks/model.py --device cuda` on "
                "a GPU machine)",
                "–",
                "–",
            ]
        )
    return table(["stage", "device", "events/s", "command", "machine"], rows)


def overhead(results: Path, name: str) -> str:
    data = load(results, name or "pipeline-overhead.json")
    if not data or "overhead" not in data:
        return NOT_MEASURED + " (`benchmarks/pipeline.py --part overhead`)"
    o = data["overhead"]
    return table(
        [
            "events, batch",
            "bare Parquet source",
            "Ray pipeline, steady state",
            "ratio",
            "actor start-up",
            "command",
            "machine",
        ],
        [
            [
                f"{o['events']:,}, {o['batch_size']:,}",
                f"{num(o['bare_source_events_per_s'], 0)} ev/s",
                f"{num(o['ray_pipeline_events_per_s'], 0)} ev/s",
                num(o["ray_over_bare"]),
                f"{num(o['ray_pipeline_startup_s'], 0)} s",
                f"`benchmarks/pipeline.py --part overhead --events {o['events']} --batch-size "
                f"{o['batch_size']}`" + quick_note(data),
                label(machine_of(data)),
            ]
        ],
    )


def _ratio_err(point: dict[str, Any]) -> float | None:
    err = point.get("events_per_s_err")
    return None if err is None else err / point["ideal_events_per_s"]


def scaling(results: Path, name: str) -> str:
    data = load(results, name or "scaling.json")
    if not data:
        return NOT_MEASURED + " (`benchmarks/scaling.py`)"
    rows = [
        [
            str(p["simulators"]),
            f"{p['events']:,}",
            f"{num(p['wall_s'], 1)} s",
            f"{num(p['startup_s'], 1)} s",
            f"{pm(p['events_per_s'], p.get('events_per_s_err'), 0)} (over "
            f"{p['steady_events']:,} events, {num(p['steady_s'], 1)} s)",
            num(p["ideal_events_per_s"], 0),
            pm(p["efficiency"], _ratio_err(p)),
        ]
        for p in data["points"]
    ]
    out = [
        f"`{data.get('command', 'benchmarks/scaling.py').strip()}`{quick_note(data)}: "
        f"{data['nodes']}-node `ray.cluster_utils.Cluster` (node CPUs {data['node_cpus']}), "
        f"simulate cost {data['sleep_ms_per_event']:g} ms per event (a sleep), batches of "
        f"{data['batch_size']}; machine: {label(machine_of(data))}"
        + (f"; {data['reanalysed']}." if data.get("reanalysed") else "."),
        "",
        table(
            [
                "simulate actors",
                "events",
                "wall clock (incl. start-up)",
                "start-up",
                "steady events/s",
                "ideal events/s",
                "efficiency",
            ],
            rows,
        ),
    ]
    chain = data.get("chain")
    if chain:
        out += [
            "",
            f"Per-batch cost of the whole chain (zero-cost backend, 2 simulate actors, batches of "
            f"{chain['batch_size']}): {num(chain['batches_per_s'], 1)} batches/s = "
            f"{num(chain['per_batch_ms'], 1)} ms per batch "
            f"({pm(chain['events_per_s'], chain.get('events_per_s_err'), 0)} events/s); driver CPU "
            f"{num(chain['driver_cpu_ms_per_batch'], 1)} ms per batch (whole run / batches).",
        ]
    rec = data.get("recorder") or []
    if rec:
        cells = ", ".join(
            f"{num(r['s_per_batch_median'] * 1e3, 1)} ms per batch of {r['batch_size']:,} "
            f"(min {num(r['s_per_batch_min'] * 1e3, 1)}, max {num(r['s_per_batch_max'] * 1e3, 1)})"
            for r in rec
        )
        out += ["", f"Recorder stage alone (fsynced Parquet per batch, no Ray): {cells}."]
    tr = data.get("transfer") or {}
    if tr:
        cells = ", ".join(
            f"{k} snapshot {v['bytes'] / 2**20:.1f} MiB: {num(v['get_s_median'] * 1e3, 1)} ms "
            f"(min {num(v['get_s_min'] * 1e3, 1)}, max {num(v['get_s_max'] * 1e3, 1)}, "
            f"{v['repeats']} repeats)"
            for k, v in tr.items()
        )
        out += ["", f"`ray.get` of a weights-snapshot-sized array from another node: {cells}."]
    return "\n".join(out)


# ---------------------------------------------------------------------------------------------
def _compare_files(results: Path) -> list[tuple[str, dict[str, Any]]]:
    files = []
    for path in sorted(results.glob("pipeline-compare*.json")):
        data = load(results, path.name)
        if data and "compare" in data:
            files.append((path.name, data))
    return files


def _best_rows(results: Path) -> dict[tuple[str, str], tuple[str, dict[str, Any], dict[str, Any]]]:
    """(case, strategy) -> (file, table row, compare block) from the largest budget × seeds;
    a quick (toy) file only where no full one has the case."""
    best: dict[tuple[str, str], tuple[str, dict[str, Any], dict[str, Any]]] = {}
    sizes: dict[tuple[str, str], tuple[bool, float]] = {}
    for name, data in _compare_files(results):
        c = data["compare"]
        for row in c.get("table", []):
            key = (row["case"], row["strategy"])
            size = (not data.get("quick"), c.get("budget_s", 0) * row.get("seeds", 1))
            if key not in best or size > sizes[key]:
                label = f"{name} (quick: toy)" if data.get("quick") else name
                best[key], sizes[key] = (label, row, c), size
    return best


def _bayes(results: Path) -> dict[str, tuple[float, float, int, str]]:
    """skim -> (Bayes-limit figure, its error, R, which): the cross-fitted lower estimate at the
    largest R, a floor a filter reaches (the plug-in is no bound: docs/statistics.md), so a
    fraction of it is an upper bound on the fraction of the limit."""
    data = load(results, "bayes_limit.json") or {}
    out = {}
    for s in data.get("skims", []):
        p = max(s["points"], key=lambda p: p["replicas"])
        out[s["skim"]] = (p["speedup"], p["speedup_err"], p["replicas"], "lower estimate")
    return out


def _oracles(results: Path) -> dict[str, tuple[float, str]]:
    out: dict[str, tuple[float, str]] = {}
    for s in (load(results, "bayes_limit.json") or {}).get("skims", []):
        out[s["skim"]] = (s["oracle_speedup"], "bayes_limit.json")
    for s in (load(results, "baseline_tree.json") or {}).get("skims", []):
        out[s["skim"]] = (s["oracle"], "baseline_tree.json")
    return out


def _fraction(value: float, err: float, ceiling: float | None) -> str:
    if ceiling is None or not ceiling:
        return NOT_MEASURED
    return pm(100 * value / ceiling, 100 * err / ceiling if math.isfinite(err) else err, 1) + " %"


def headline(results: Path, _: str) -> str:
    best = _best_rows(results)
    bayes, oracles = _bayes(results), _oracles(results)
    tree = {s["skim"]: s for s in (load(results, "baseline_tree.json") or {}).get("skims", [])}
    cases = sorted({case for case, _ in best}, key=lambda c: ("@" in c, c))
    if not cases:
        return NOT_MEASURED + " (`benchmarks/pipeline.py --part compare`)"
    rows = []
    for case in cases:
        skim = case.split("@")[0]
        nominal = "@" not in case  # ceilings were measured on nominal-conditions events only
        oracle = oracles.get(skim) if nominal else None
        limit = bayes.get(skim) if nominal else None
        o_txt = f"{oracle[0]:.1f} ({oracle[1]})" if oracle else NOT_MEASURED
        b_txt = (
            f"{limit[0]:.2f} ± {limit[1]:.2f} ({limit[3]}, R = {limit[2]})"
            if limit
            else (NOT_MEASURED)
        )
        t = tree.get(skim) if nominal else None
        t_txt = pm(t["tree_speedup"], t["tree_speedup_err"]) if t else NOT_MEASURED
        ceilings = [f"oracle {o_txt}", f"Bayes limit {b_txt}", f"tree baseline {t_txt}"]
        rows.append([f"**{case}**", "ceilings", *ceilings, "", ""])
        for strategy in STRATEGIES:
            if (case, strategy) not in best:
                continue
            source, r, c = best[(case, strategy)]
            seeds = r.get("seeds", 1)
            sem = r.get("speedup_sem")
            if seeds > 1 and sem is not None and math.isfinite(sem):
                err, how = sem, f"s.e. over {seeds} seeds"
            else:
                err, how = r.get("speedup_sigma_mean", float("nan")), "σ of the run"
            rows.append(
                [
                    case,
                    strategy,
                    f"{pm(r['speedup_mean'], err)} ({how})",
                    _fraction(r["speedup_mean"], err, oracle[0] if oracle else None),
                    _fraction(r["speedup_mean"], err, limit[0] if limit else None),
                    f"{c.get('budget_s', 0):,.0f} s, {seeds}",
                    f"`{source}`",
                ]
            )
    return table(
        [
            "skim",
            "strategy",
            "speedup",
            "fraction of oracle",
            "fraction of Bayes limit",
            "budget (emulated), seeds",
            "result",
        ],
        rows,
    )


def compare_table(results: Path, name: str) -> str:
    data = load(results, name)
    if not data or "compare" not in data:
        return f"{NOT_MEASURED} (`{name}` is not in benchmarks/results/)"
    return str(data["compare"].get("markdown", NOT_MEASURED)).strip()


SECTIONS: dict[str, Callable[[Path, str], str]] = {
    "machines": machines,
    "stage_throughput": stage_throughput,
    "overhead": overhead,
    "scaling": scaling,
    "headline": headline,
    "compare": compare_table,
}
PLACEHOLDER = re.compile(r"\{\{\s*(\w+)(?::([^}]*))?\s*\}\}")


def render(results: Path = RESULTS, template: Path = TEMPLATE) -> str:
    def one(match: re.Match[str]) -> str:
        name, arg = match.group(1), (match.group(2) or "").strip()
        if name not in SECTIONS:
            raise SystemExit(f"{template}: unknown section '{name}' (known: {', '.join(SECTIONS)})")
        return SECTIONS[name](results, arg)

    return PLACEHOLDER.sub(one, template.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--template", type=Path, default=TEMPLATE)
    parser.add_argument("--out", type=Path, default=DOC)
    args = parser.parse_args()
    args.out.write_text(render(args.results, args.template))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
