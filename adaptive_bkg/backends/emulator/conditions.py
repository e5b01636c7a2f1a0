"""Detector parameters and the named conditions (`nominal`, `high-background`, `degraded`).

Every number names its source. "[ref §n]" points at the team's reference notes
(references/belle2_reference_numbers.md, section n); "[TDR]" is
the Belle II Technical Design Report, arXiv:1011.0352; "[Belle NIM]" is NIM A479 (2002) 117.
docs/skims.md summarises them.
Numbers marked "[emulator choice]" are round values picked to look like Belle II, not measured.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from adaptive_bkg.errors import UserError
from adaptive_bkg.physics.geometry import BELLE2_ACCEPTANCE as ACCEPTANCE
from adaptive_bkg.physics.pdg import PDG, mass_gev

SPECIES: tuple[str, ...] = ("e", "mu", "pi", "K", "p")
"""Charged-particle species and PID hypotheses, in this order everywhere (index = code)."""
E, MU, PI, K, P = range(5)
SPECIES_MASS_GEV: tuple[float, ...] = tuple(
    mass_gev(code) for code in (PDG.E_MINUS, PDG.MU_MINUS, PDG.PI_PLUS, PDG.K_PLUS, PDG.PROTON)
)

# PID response P(hypothesis | true species) in two momentum bins (below / above
# `pid_p_split_gev`); rows are true species, columns hypotheses, in SPECIES order.
PidMatrix = tuple[tuple[float, float, float, float, float], ...]

PID_LOW_P: PidMatrix = (
    # e: ECL E/p is poor at low momentum, some electrons look like pions  [emulator choice]
    (0.85, 0.00, 0.13, 0.01, 0.01),
    # mu: the KLM separates mu from pi only above 0.7 GeV [ref §2 PID, arXiv:2503.11351]
    (0.01, 0.00, 0.97, 0.015, 0.005),
    # pi: ~3% pi->K at low momentum (dE/dx + TOP)  [ref §2 PID, "from memory" K/pi numbers]
    (0.005, 0.00, 0.95, 0.03, 0.015),
    # K: ~92% K efficiency at low momentum  [ref §2 PID, Belle ACC+TOF+dE/dx ~88–90%]
    (0.005, 0.00, 0.06, 0.92, 0.015),
    # p  [emulator choice]
    (0.00, 0.00, 0.02, 0.03, 0.95),
)
PID_HIGH_P: PidMatrix = (
    # e: eff 92.4%, pi fake 0.25% for p = 1–3 GeV [ref §2 PID, Belle hep-ex/0108044]
    (0.924, 0.005, 0.066, 0.003, 0.002),
    # mu: 90% efficiency [ref §2 PID, arXiv:2503.11351]
    (0.005, 0.90, 0.09, 0.004, 0.001),
    # pi: e fake 0.25% [Belle eID], mu fake 2% (analysis-level cut, [ref §2 PID]),
    # pi->K ~7% [ref §2 PID, "5–10%" from memory]
    (0.0025, 0.02, 0.9, 0.07, 0.0075),
    # K: ~88% efficiency [ref §2 PID, Belle 88–90%]
    (0.002, 0.003, 0.10, 0.88, 0.015),
    # p  [emulator choice]
    (0.00, 0.00, 0.05, 0.05, 0.90),
)


@dataclass(frozen=True)
class DetectorParams:
    """Parametric Belle II-like detector response; see the module docstring for the sources."""

    # --- tracking (CDC) -----------------------------------------------------------------
    # Geometry (polar ranges, tracking volume, pT threshold) is physics.geometry's, which the
    # model's acceptance inputs read too [ref §2 Acceptances, AcceptanceVariables.cc].
    cdc_theta_min_deg: float = ACCEPTANCE.cdc_theta_deg[0]
    cdc_theta_max_deg: float = ACCEPTANCE.cdc_theta_deg[1]
    track_pt_min_gev: float = ACCEPTANCE.track_pt_min_gev
    track_eff_high_pt: float = 0.97  # pT above `track_eff_pt_knee_gev`  [emulator choice]
    track_eff_low_pt: float = 0.90  # curlers below the knee are harder  [emulator choice]
    track_eff_pt_knee_gev: float = 0.25  # [emulator choice]
    # A track needs enough CDC layers: daughters of decays beyond the tracking volume are lost.
    track_max_production_radius_cm: float = ACCEPTANCE.tracker_radius_cm
    track_max_production_z_cm: float = ACCEPTANCE.tracker_half_z_cm
    # sigma(pT)/pT = a*pT (+) b/beta  [ref §2 Momentum resolution, TDR (from memory)]
    pt_resolution_a: float = 0.0011
    pt_resolution_b: float = 0.0025
    impact_resolution_cm: float = 0.002  # ~20 um d0/z0 smearing (PXD)  [emulator choice]
    # Track direction: sigma = a (+) b / (p beta); ~1 mrad at 1 GeV  [emulator choice, TDR-like]
    angle_resolution_rad: float = 0.0005
    angle_scattering_rad_gev: float = 0.001
    # --- calorimeter (ECL) --------------------------------------------------------------
    # forward / barrel / backward polar ranges with gaps [ref §2 Acceptances]
    ecl_theta_ranges_deg: tuple[tuple[float, float], ...] = ACCEPTANCE.ecl_theta_ranges_deg
    # sigma(E)/E = a/E (+) b/E^(1/4) (+) c  [ref §2 ECL, Belle NIM (from memory)]
    ecl_resolution_a: float = 0.00066
    ecl_resolution_b: float = 0.0081
    ecl_resolution_c: float = 0.0134
    cluster_threshold_gev: float = 0.05  # ROE cluster cut E > 0.05 GeV [ref §2 Acceptances]
    photon_efficiency: float = 0.98  # conversions in front of the ECL  [emulator choice]
    # Charged tracks reach the barrel ECL above pT 0.28 GeV [ref §2 Acceptances]
    ecl_track_pt_min_gev: float = 0.28
    mip_energy_gev: float = 0.2  # minimum-ionising deposit of mu/hadrons in 30 cm CsI [TDR]
    # --- particle identification --------------------------------------------------------
    pid_p_split_gev: float = 0.7  # KLM mu ID needs p > 0.7 GeV [ref §2 PID]
    pid_low_p: PidMatrix = PID_LOW_P
    pid_high_p: PidMatrix = PID_HIGH_P
    # --- V0 (K_S -> pi+ pi-, Lambda -> p pi-) -------------------------------------------
    v0_fit_efficiency: float = 0.95  # RAVE vertex fit chi2 < 50 [ref §2 K_S]  [emulator choice]
    v0_min_radius_cm: float = 0.0  # the V0 finder also works inside the beam pipe [ref §2 K_S]
    v0_max_radius_cm: float = 40.0  # daughters must be tracks [ref §2 K_S]; = track limit
    # --- beam background overlay (run-dependent MC) -------------------------------------
    bkg_tracks_mean: float = 0.0  # fake/beam-induced tracks per event
    bkg_clusters_mean: float = 0.0  # low-energy beam-background clusters per event
    bkg_cluster_energy_gev: float = 0.04  # mean of the exponential energy spectrum

    def __post_init__(self) -> None:
        for name in ("track_eff_high_pt", "track_eff_low_pt", "photon_efficiency"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"DetectorParams.{name} must be in [0, 1]")
        if not 0.0 <= self.v0_fit_efficiency <= 1.0:
            raise ValueError("DetectorParams.v0_fit_efficiency must be in [0, 1]")
        for matrix in (self.pid_low_p, self.pid_high_p):
            if len(matrix) != len(SPECIES) or any(
                len(row) != len(SPECIES) or min(row) < 0 or abs(sum(row) - 1.0) > 1e-9
                for row in matrix
            ):
                raise ValueError("PID matrices must be 5x5 with non-negative rows summing to 1")


CONDITIONS: dict[str, DetectorParams] = {
    "nominal": DetectorParams(),
    # Run-dependent MC overlays recorded beam background: mostly soft photons, some fake
    # tracks, concentrated in the endcaps [ref §2 ECL "degraded by beam background in the
    # endcaps"]. Rates are [emulator choice].
    "high-background": DetectorParams(
        bkg_tracks_mean=1.5,
        bkg_clusters_mean=8.0,
        ecl_resolution_b=0.0110,
        track_eff_high_pt=0.96,
        track_eff_low_pt=0.86,
    ),
    # Aged / partly dead detector: lower efficiencies, 1.5x worse resolutions, PID
    # efficiencies mixed 15% towards the pion row  [emulator choice].
    "degraded": DetectorParams(
        track_eff_high_pt=0.88,
        track_eff_low_pt=0.75,
        pt_resolution_a=0.00165,
        pt_resolution_b=0.00375,
        angle_resolution_rad=0.00075,
        angle_scattering_rad_gev=0.0015,
        ecl_resolution_b=0.0122,
        ecl_resolution_c=0.0200,
        photon_efficiency=0.93,
        v0_fit_efficiency=0.85,
    ),
}


def _towards_pion(matrix: PidMatrix, fraction: float) -> PidMatrix:
    """Move `fraction` of each non-pion row's diagonal into the pion column."""
    rows = []
    for true, row in enumerate(matrix):
        values = list(row)
        if true != PI:
            moved = values[true] * fraction
            values[true] -= moved
            values[PI] += moved
        rows.append((values[0], values[1], values[2], values[3], values[4]))
    return tuple(rows)


CONDITIONS["degraded"] = replace(
    CONDITIONS["degraded"],
    pid_low_p=_towards_pion(PID_LOW_P, 0.15),
    pid_high_p=_towards_pion(PID_HIGH_P, 0.15),
)


def detector_params(conditions: str) -> DetectorParams:
    """The parameters of a named condition; UserError listing the allowed names otherwise."""
    try:
        return CONDITIONS[conditions]
    except KeyError:
        raise UserError(
            f"unknown emulator conditions '{conditions}' "
            f"(allowed: {', '.join(CONDITIONS)}; set backend.conditions)"
        ) from None
