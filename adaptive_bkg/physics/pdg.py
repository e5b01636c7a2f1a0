"""PDG Monte Carlo particle numbers and masses, read from the `particle` package.

`PDG.K_S0` and friends name the codes the code uses (the antiparticle of a code is its negative),
so that no module writes 310 or 0.497611 itself. Masses and lifetimes come from the PDG table
that `particle` ships (`mass_gev`, `ctau_cm`); loading it costs ~0.7 s once per process.

Three values are pinned to what the code used before it read the table (`PINNED_*`), because
the table's newer editions would change results: m_e (CODATA 2022, 0.51099895069 MeV, moves the
e+ beam momentum by one ulp and so every continuum event), m(B0) (PDG 2025, 5279.72 MeV,
flips about 1 in 5000 fei-semileptonic decisions) and cτ(Λ) (PDG 2025, 7.846 cm, moves every
emulated Λ decay point by 0.6 %). Changing them is a physics change: do it on purpose, with new
reference numbers.
"""

from __future__ import annotations

from functools import cache

from particle import PDGID, Particle
from particle.pdgid import literals as ids


class PDG:
    """Monte Carlo particle numbers by name, as ints (`particle`'s PDGID literals)."""

    D_QUARK, U_QUARK, S_QUARK, C_QUARK = int(ids.d), int(ids.u), int(ids.s), int(ids.c)
    E_MINUS, MU_MINUS, TAU_MINUS = int(ids.e_minus), int(ids.mu_minus), int(ids.tau_minus)
    NU_E, NU_MU, NU_TAU = int(ids.nu_e), int(ids.nu_mu), int(ids.nu_tau)
    GAMMA, Z0 = int(ids.gamma), int(ids.Z_0)
    PI_PLUS, PI0, ETA = int(ids.pi_plus), int(ids.pi_0), int(ids.eta)
    K_PLUS, K_S0, K_L0 = int(ids.K_plus), int(ids.K_S_0), int(ids.K_L_0)
    PHI = int(ids.phi_1020)
    PROTON, NEUTRON = int(ids.p), int(ids.n)
    LAMBDA = int(ids.Lambda)
    SIGMA_PLUS, SIGMA_MINUS = int(ids.Sigma_plus), int(ids.Sigma_minus)
    XI_MINUS, XI0, OMEGA_MINUS = int(ids.Xi_minus), int(ids.Xi_0), int(ids.Omega_minus)
    D0, D_PLUS, D_S_PLUS = int(ids.D_0), int(ids.D_plus), int(ids.D_s_plus)
    D_STAR_PLUS, D_STAR0 = int(ids.Dst_2010_plus), int(ids.Dst_2007_0)
    J_PSI = int(ids.Jpsi_1S)
    B0, B_PLUS = int(ids.B_0), int(ids.B_plus)
    UPSILON_4S = int(ids.Upsilon_4S)


NEUTRINOS: tuple[int, ...] = (PDG.NU_E, PDG.NU_MU, PDG.NU_TAU)

PINNED_MASS_GEV: dict[int, float] = {
    PDG.E_MINUS: 0.51099895e-3,  # CODATA 2018
    PDG.B0: 5.27966,  # PDG 2023
}
PINNED_CTAU_CM: dict[int, float] = {PDG.LAMBDA: 7.89}  # PDG 2018 (tau = 2.632e-10 s)


@cache
def mass_gev(code: int) -> float:
    """PDG mass of a particle (GeV); the same for its antiparticle."""
    if abs(code) in PINNED_MASS_GEV:
        return PINNED_MASS_GEV[abs(code)]
    mass = Particle.from_pdgid(abs(code)).mass
    if mass is None:
        raise ValueError(f"the PDG table has no mass for particle {code}")
    return float(mass) / 1000.0  # the table is in MeV


@cache
def ctau_cm(code: int) -> float:
    """PDG mean decay length c·tau of a particle (cm)."""
    if abs(code) in PINNED_CTAU_CM:
        return PINNED_CTAU_CM[abs(code)]
    ctau = Particle.from_pdgid(abs(code)).ctau
    if ctau is None:
        raise ValueError(f"the PDG table has no lifetime for particle {code}")
    return float(ctau) / 10.0  # the table is in mm


@cache
def charge(code: int) -> float:
    """Electric charge (units of e) of a particle; 0 for a code the PDG numbering lacks."""
    value = PDGID(code).charge
    return float(value) if value is not None else 0.0
