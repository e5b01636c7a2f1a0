"""Υ(4S) -> B Bbar events for Pythia, built in the lab by a Python Les Houches source.

The source builds each event itself: beams with energy spread and crossing angle, the Υ(4S)
with the event's own mass, and the B pair with the sin²θ angular distribution of a vector
decaying to two pseudoscalars; B0 Bbar0 mixing is done here, coherently (see `UpsilonSource`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.physics.beams import ELECTRON_MASS_GEV, Beams
from adaptive_bkg.physics.pdg import PDG

X_D = 0.770
"""B0 mixing parameter x_d = Δm_d/Γ_d (PDG 2024: 0.769 ± 0.004); χ_d = x²/(2(1+x²)) = 0.186."""


def _sin2_cos_theta(u: float) -> float:
    """cos θ distributed as 1 - cos²θ: the inverse of F(c) = (3c - c³ + 2)/4."""
    return 2.0 * math.cos((math.acos(1.0 - 2.0 * u) + 4.0 * math.pi) / 3.0)


class UpsilonSource:
    """Feeds Pythia e+e- -> Υ(4S) -> B Bbar events through the Les Houches interface.

    Mixing (`mixed`): the B0 Bbar0 pair from the Υ(4S) is a coherent C = -1 state, so the two
    flavours at decay are opposite with probability (1 + cos(x_d Δt/τ))/2, with Δt the
    difference of the two proper decay times; integrated, a fraction χ_d = 0.186 of pairs decay
    as same flavour (incoherent mixing of each B, Pythia's default, would give 2χ(1-χ) = 0.30).
    The pair is recorded with production flavours B0 + Bbar0; the B that decays second, if it
    oscillated, gets one daughter of the other flavour, which then decays (as EvtGen records it).
    Decay times are chosen here and handed to Pythia (LesHouches:setLifetime = 0).
    """

    BLOCK = 1024  # random numbers are drawn in blocks: cheap and independent of batch sizes

    def __init__(
        self,
        pythia_module: Any,
        beams: Beams,
        spread_gev: tuple[float, float],
        b_id: int,
        b_mass: float,
        b_tau0_mm: float,
        mixing: bool,
        seed: int,
    ) -> None:
        base = pythia_module.LHAup

        source = self

        class _LHA(base):  # type: ignore[misc, valid-type]
            def __init__(self) -> None:
                super().__init__(3)

            def setInit(self) -> bool:
                self.setBeamA(PDG.E_MINUS, beams.e_minus_gev)
                self.setBeamB(-PDG.E_MINUS, beams.e_plus_gev)
                self.setStrategy(3)
                self.addProcess(9999, 1.0, 0.0, 1.0)
                self.setXSec(0, 1.0)
                return True

            def setEvent(self, idProcess: int = 0) -> bool:
                source.fill(self)
                return True

        self.lha = _LHA()
        self.beams = beams
        self.spread_gev = spread_gev  # Gaussian sigma of the e- and the e+ energy
        self.b_id = b_id
        self.b_mass = b_mass
        self.b_tau0 = b_tau0_mm
        self.mixing = mixing
        self.rng = np.random.default_rng(seed)
        self._row = self.BLOCK
        self._uniform = np.empty((0, 3))
        self._normal = np.empty((0, 2))
        self._exponential = np.empty((0, 2))

    def _draw(self) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        if self._row >= self.BLOCK:
            self._uniform = self.rng.random((self.BLOCK, 3))
            self._normal = self.rng.standard_normal((self.BLOCK, 2))
            self._exponential = self.rng.standard_exponential((self.BLOCK, 2))
            self._row = 0
        row = self._row
        self._row += 1
        return self._uniform[row], self._normal[row], self._exponential[row]

    def fill(self, lha: Any) -> None:
        uniform, normal, exponential = self._draw()
        nominal, (spread_minus, spread_plus) = self.beams, self.spread_gev
        beams = Beams(  # this event's beams
            nominal.e_minus_gev + spread_minus * float(normal[0]),
            nominal.e_plus_gev + spread_plus * float(normal[1]),
            nominal.crossing_angle_rad,
        )
        k_minus, k_plus = beams.four_momenta()
        e, px, py, pz = beams.total
        mass = beams.sqrt_s

        # Angular distribution relative to the e- direction in the Υ(4S) rest frame.
        _, ax, ay, az = (float(v) for v in beams.to_cms(*k_minus))
        norm = math.sqrt(ax * ax + ay * ay + az * az)
        ax, ay, az = ax / norm, ay / norm, az / norm
        # Two unit vectors perpendicular to the axis.
        ux, uy, uz = (0.0, 1.0, 0.0) if abs(ay) < 0.9 else (1.0, 0.0, 0.0)
        dot = ux * ax + uy * ay + uz * az
        ux, uy, uz = ux - dot * ax, uy - dot * ay, uz - dot * az
        norm = math.sqrt(ux * ux + uy * uy + uz * uz)
        ux, uy, uz = ux / norm, uy / norm, uz / norm
        vx, vy, vz = ay * uz - az * uy, az * ux - ax * uz, ax * uy - ay * ux

        cos_t = _sin2_cos_theta(float(uniform[0]))
        sin_t = math.sqrt(max(0.0, 1.0 - cos_t * cos_t))
        phi = 2.0 * math.pi * float(uniform[1])
        cp, sp = math.cos(phi) * sin_t, math.sin(phi) * sin_t
        dx = cos_t * ax + cp * ux + sp * vx
        dy = cos_t * ay + cp * uy + sp * vy
        dz = cos_t * az + cp * uz + sp * vz
        p_star = math.sqrt(max(0.0, mass * mass / 4.0 - self.b_mass * self.b_mass))
        e_star = math.sqrt(p_star * p_star + self.b_mass * self.b_mass)
        b_first = [float(v) for v in beams.to_lab(e_star, p_star * dx, p_star * dy, p_star * dz)]
        b_second = [
            float(v) for v in beams.to_lab(e_star, -p_star * dx, -p_star * dy, -p_star * dz)
        ]

        tau = (self.b_tau0 * float(exponential[0]), self.b_tau0 * float(exponential[1]))
        oscillates = -1  # index (0 or 1) of the B that oscillates before it decays
        if self.mixing:
            later = 0 if tau[0] > tau[1] else 1
            dt = abs(tau[0] - tau[1]) / self.b_tau0
            if float(uniform[2]) < 0.5 * (1.0 - math.cos(X_D * dt)):
                oscillates = later

        me = ELECTRON_MASS_GEV
        lha.setProcess(9999, 1.0, mass, 1.0 / 137.036, 0.2)
        electron, upsilon = PDG.E_MINUS, PDG.UPSILON_4S
        lha.addParticle(electron, -1, 0, 0, 0, 0, *k_minus[1:], k_minus[0], me, 0.0, 9.0)
        lha.addParticle(-electron, -1, 0, 0, 0, 0, *k_plus[1:], k_plus[0], me, 0.0, 9.0)
        lha.addParticle(upsilon, 2, 1, 2, 0, 0, px, py, pz, e, mass, 0.0, 9.0)
        for index, (sign, p4) in enumerate(((1, b_first), (-1, b_second))):
            b_e, b_px, b_py, b_pz = p4
            if index == oscillates:
                lha.addParticle(sign * self.b_id, 2, 3, 0, 0, 0, b_px, b_py, b_pz, b_e,
                                self.b_mass, 0.0, 9.0)  # fmt: skip
            else:
                lha.addParticle(sign * self.b_id, 1, 3, 0, 0, 0, b_px, b_py, b_pz, b_e,
                                self.b_mass, tau[index], 9.0)  # fmt: skip
        if oscillates >= 0:
            sign = 1 if oscillates == 0 else -1
            b_e, b_px, b_py, b_pz = b_first if oscillates == 0 else b_second
            lha.addParticle(-sign * self.b_id, 1, 4 + oscillates, 0, 0, 0, b_px, b_py, b_pz,
                            b_e, self.b_mass, tau[oscillates], 9.0)  # fmt: skip
