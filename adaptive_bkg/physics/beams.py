"""The colliding beams and the one Lorentz boost between the lab and their CMS frame.

Basf2 convention: both beams lean by half the crossing angle towards +x, so the e- (HER) flies
along (sin a, 0, cos a) and the e+ (LER) along (sin a, 0, -cos a), and the z axis (the solenoid)
bisects the two. Beam particles carry the electron mass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.physics.pdg import PDG, mass_gev

F64 = NDArray[np.float64]
Values = F64 | float
Vec4 = tuple[float, float, float, float]

ELECTRON_MASS_GEV = mass_gev(PDG.E_MINUS)


def boost(
    energy: Values,
    px: Values,
    py: Values,
    pz: Values,
    beta: tuple[Values, Values, Values],
    gamma: Values | None = None,
) -> tuple[F64, F64, F64, F64]:
    """Lorentz boost of 4-vectors (E, p) by velocity `beta`: a vector at rest in a frame moving
    with `beta` comes out moving with it. Vectorised: any argument may be an array (one beta per
    vector) or a scalar. `gamma` may be given when it is known more precisely than from beta
    (E/m of a parent); beta = 0 leaves the vectors unchanged.
    """
    bx, by, bz = beta
    b2 = np.maximum(bx * bx + by * by + bz * bz, 1e-300)  # beta = 0: bp = 0 and no division
    if gamma is None:
        gamma = 1.0 / np.sqrt(1.0 - b2)
    bp = bx * px + by * py + bz * pz
    k = (gamma - 1.0) * bp / b2 + gamma * energy
    return (
        np.asarray(gamma * (energy + bp)),
        np.asarray(px + k * bx),
        np.asarray(py + k * by),
        np.asarray(pz + k * bz),
    )


class BeamSettings(Protocol):
    """Anything that names the beam energies and crossing angle (e.g. `cfg.generator`)."""

    @property
    def e_minus_gev(self) -> float: ...
    @property
    def e_plus_gev(self) -> float: ...
    @property
    def crossing_angle_rad(self) -> float: ...


@dataclass(frozen=True)
class Beams:
    """Nominal e- (HER) and e+ (LER) beam energies and their full crossing angle."""

    e_minus_gev: float
    e_plus_gev: float
    crossing_angle_rad: float

    @classmethod
    def of(cls, settings: BeamSettings) -> Beams:
        """The beams named by a settings object such as `cfg.generator`."""
        return cls(settings.e_minus_gev, settings.e_plus_gev, settings.crossing_angle_rad)

    def four_momenta(
        self, e_minus_gev: float | None = None, e_plus_gev: float | None = None
    ) -> tuple[Vec4, Vec4]:
        """(E, px, py, pz) of the e- and of the e+ at the given (default nominal) energies."""
        em = self.e_minus_gev if e_minus_gev is None else e_minus_gev
        ep = self.e_plus_gev if e_plus_gev is None else e_plus_gev
        pm = math.sqrt(em * em - ELECTRON_MASS_GEV**2)
        pp = math.sqrt(ep * ep - ELECTRON_MASS_GEV**2)
        half = self.crossing_angle_rad / 2
        s, c = math.sin(half), math.cos(half)
        return (em, pm * s, 0.0, pm * c), (ep, pp * s, 0.0, -pp * c)

    @cached_property
    def total(self) -> Vec4:
        """Nominal (E, px, py, pz) of the e+e- system in the lab."""
        km, kp = self.four_momenta()
        e, px, py, pz = (a + b for a, b in zip(km, kp, strict=True))
        return e, px, py, pz

    @cached_property
    def sqrt_s(self) -> float:
        """Invariant mass of the e+e- system (GeV)."""
        e, px, py, pz = self.total
        return math.sqrt(e * e - px * px - py * py - pz * pz)

    @cached_property
    def beta(self) -> tuple[float, float, float]:
        """Velocity of the CMS in the lab."""
        e, px, py, pz = self.total
        return px / e, py / e, pz / e

    def to_cms(
        self, energy: Values, px: Values, py: Values, pz: Values
    ) -> tuple[F64, F64, F64, F64]:
        """Lab 4-vectors seen in the CMS."""
        bx, by, bz = self.beta
        return boost(energy, px, py, pz, (-bx, -by, -bz))

    def cms_matrix(self) -> F64:
        """[4, 4] matrix L with (E*, p*) = L @ (E, p) for lab 4-vectors: `to_cms` applied to the
        four basis vectors (a boost is linear), so that a model can apply the one boost above
        as a constant matrix product."""
        rows = self.to_cms(*np.eye(4))  # component a of the boosted basis vector k: rows[a][k]
        return np.stack(rows)

    def to_lab(
        self, energy: Values, px: Values, py: Values, pz: Values
    ) -> tuple[F64, F64, F64, F64]:
        """CMS 4-vectors seen in the lab."""
        return boost(energy, px, py, pz, self.beta)
