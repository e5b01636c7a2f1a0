#!/usr/bin/env python3
"""Stand-in "steering script" for the `external` backend.

The external backend runs a command like

    backend.external.command: >-
      python sims/steering_example.py --in {input} --out {output} --skims {skims} --config {config}

on each batch of kept events and reads back `event_id`, one boolean column per skim and
`cost_s`. This script plays that role without basf2: it reads the events, runs adaptive-bkg's
in-process detector emulator on them, and writes the labels. Because it uses the same backend
config, its flags and costs equal the in-process emulator's bit for bit, which the backend
contract test checks (tests/test_backends.py).

A real basf2 steering script does the same I/O around the real chain, roughly:

    import basf2, simulation, reconstruction, skim.registry
    main = basf2.Path()
    main.add_module(ParquetEventReader(args.input))   # a basf2.Module that fills MCParticles
                                                      # (pdg, mother, E, p, vertex, time) per event
    simulation.add_simulation(main, bkgfiles=...)     # Geant4 + beam-background overlay
    reconstruction.add_reconstruction(main)
    for name in args.skims:                           # e.g. DstToD0Pi_D0ToHpJm
        skim_object = skim.registry.Registry.get_skim_function(name)()
        skim_object(main)                             # sets the event-level flag passes_<skim>
    main.add_module(LabelWriter(args.output, args.skims))  # per event: event_id, flags, and
                                                      # cost_s from time.process_time() deltas
                                                      # between the reader and the writer
    basf2.process(main)

    # run as: basf2 steering.py -- --in {input} --out {output} --skims {skims}

Skim names map to basf2 skims in the steering script (e.g. dstar-d0pi -> DstToD0Pi_D0ToHpJm).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--in", dest="input", type=Path, required=True, help="events Parquet")
    parser.add_argument("--out", dest="output", type=Path, required=True, help="labels file")
    parser.add_argument("--skims", default=None, help="comma-separated skim names")
    parser.add_argument("--config", type=Path, default=None, help="backend config YAML")
    parser.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    args = parser.parse_args(argv)

    import pyarrow as pa
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq
    import yaml

    from adaptive_bkg.backends import make_backend
    from adaptive_bkg.config import BackendConfig
    from adaptive_bkg.errors import UserError
    from adaptive_bkg.formats.events import read_events

    try:
        raw = yaml.safe_load(args.config.read_text()) if args.config else {}
        # The external backend passes its own config; here the emulator does the work.
        cfg = BackendConfig.model_validate({**(raw or {}), "name": "emulator"})
        skims = [s for s in args.skims.split(",") if s] if args.skims else None
        backend = make_backend(cfg, skims)
        events = read_events(args.input)
        result = backend.simulate(events)
    except UserError as exc:
        print(f"steering_example: {exc}", file=sys.stderr)
        return 2

    columns = {"event_id": pa.array(result.event_id, pa.uint64())}
    for j, skim in enumerate(backend.skims):
        columns[skim] = pa.array(result.flags[:, j], pa.bool_())
    columns["cost_s"] = pa.array(result.cost_s, pa.float64())
    table = pa.table(columns)
    if args.format == "csv":
        pa_csv.write_csv(table, args.output)
    else:
        pq.write_table(table, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
