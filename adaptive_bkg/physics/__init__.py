"""Physics facts the rest of the code shares, with no knowledge of configuration or files.

- `processes`: the background processes (names, codes, cross sections);
- `pdg`: particle codes and masses, from the PDG tables of the `particle` package;
- `beams`: the colliding beams and the Lorentz boost to their centre-of-mass (CMS) frame;
- `geometry`: the detector acceptance (tracker and calorimeter polar ranges, tracking volume);
- `shapes`: event shapes (momentum tensor, Fox–Wolfram R2, sphericity, thrust).

This layer imports only numpy, `particle` and `adaptive_bkg.errors`: configuration, formats,
generators and backends build on it, never the other way round.
"""
