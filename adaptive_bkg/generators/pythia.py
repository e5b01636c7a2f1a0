"""Pythia 8 generic background at the Υ(4S) with Belle II beams.

One Pythia instance per background type, built lazily on first use inside the generator
(Pythia objects cannot be pickled, so a `PythiaGenerator` is created where it runs):

- continuum (`uubar`, `ddbar`, `ssbar`, `ccbar`) and `taupair`: e+e- -> γ*/Z -> f fbar
  (WeakSingleBoson:ffbar2gmZ, with ISR from the lepton PDF), beams given as momentum vectors
  (Beams:frameType = 3) so the 83 mrad crossing angle and the boost come out right; the beam
  energy spread is Pythia's own Gaussian momentum spread (Beams:allowMomentumSpread).
- `charged`, `mixed`: Υ(4S) -> B Bbar fed from a Python `LHAup` (Beams:frameType = 5). The
  LHAup builds each event in the lab frame itself: beams with energy spread and crossing angle,
  the Υ(4S) with the event's own mass, and the B pair with the sin²θ angular distribution of a
  vector decaying to two pseudoscalars. B0 Bbar0 mixing is done here, coherently (see
  `_UpsilonSource`), and Pythia's own (incoherent) mixing is switched off.

Particles are kept as in basf2's smart background filter: hadrons, leptons and photons that are
in the final state or decayed (with their full decay tree); beam particles, partons, the γ*/Z
and shower bookkeeping copies are dropped. Mother indices point to the nearest kept ancestor
(-1 if none). Units: Pythia mm -> cm, mm/c -> ns.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import awkward as ak
import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.config import MAX_SEED, GeneratorConfig, fresh_seed
from adaptive_bkg.errors import UserError
from adaptive_bkg.formats.events import (
    BKG_TYPES,
    FLOAT_FIELDS,
    MAX_WORKER,
    EventBatch,
    bkg_type_code,
    make_event_ids,
    offsets_from_counts,
)

ELECTRON_MASS_GEV = 0.51099895e-3
MM_PER_NS = 299.792458  # c in mm/ns: Pythia times are in mm/c
CM_PER_MM = 0.1
X_D = 0.770
"""B0 mixing parameter x_d = Δm_d/Γ_d (PDG 2024: 0.769 ± 0.004); χ_d = x²/(2(1+x²)) = 0.186."""

PYTHIA_MAX_SEED = 900_000_000

CONTINUUM_QUARK: dict[str, int] = {"uubar": 2, "ddbar": 1, "ssbar": 3, "ccbar": 4}
B_MESON: dict[str, int] = {"charged": 521, "mixed": 511}

BELLE2_FRAGMENTATION: tuple[str, ...] = (
    # basf2 generators/modules/fragmentation/data/pythia_belle2.dat (DESIGN §3)
    "StringFlav:etaSup = 0.27",
    "StringFlav:etaPrimeSup = 0.12",
    "StringFragmentation:stopMass = 0.3",
    "StringZ:aLund = 0.32",
    "StringZ:bLund = 0.62",
    "StringZ:usePetersonC = off",
    "StringZ:usePetersonB = off",
    "StringZ:usePetersonH = off",
    "StringZ:rFactC = 1.0",
    "ParticleDecays:multIncrease = 4.5",
    "ParticleDecays:multIncreaseWeak = 2.0",
    "ParticleDecays:FSRinDecays = on",
    "TimeShower:QEDshowerByQ = on",
)


def stream_seed(seed: int, run: int, worker: int, incarnation: int) -> int:
    """The random state of one generator process: a 63-bit hash of everything that must make
    its physics distinct. A restarted worker (new incarnation), another worker, another run
    number or another base seed each start an independent stream; equal inputs repeat it
    bit for bit. Stored with every event (`EventBatch.seed`)."""
    if not 0 <= seed <= MAX_SEED:
        raise UserError(f"generator seed {seed} outside 0..{MAX_SEED}")
    for name, value in (("run", run), ("worker", worker), ("incarnation", incarnation)):
        if value < 0:
            raise UserError(f"{name} number {value} must be >= 0")
    words = np.random.SeedSequence([seed, run, worker, incarnation, 0x5EED]).generate_state(2)
    return int((int(words[0]) << 31) ^ int(words[1])) & MAX_SEED


def pythia_seed(stream: int, bkg_type: str) -> int:
    """Pythia's Random:seed (1..9e8) for one type within one stream. Pythia takes only ~30 bits,
    so distinct streams collide with probability n²/1.8e9 per type (3e-4 for 700 streams);
    `adaptive-bkg check` proves the absence of repeats from the records' physics hashes."""
    word = np.random.SeedSequence([stream, bkg_type_code(bkg_type), 0xB1A5]).generate_state(1)
    return int(word[0]) % (PYTHIA_MAX_SEED - 1) + 1


# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Beams:
    """Nominal lab-frame beams. Basf2 convention: both beams lean by half the crossing angle
    towards +x, so the e- flies along (sin a, 0, cos a) and the e+ along (sin a, 0, -cos a)."""

    e_minus: float
    e_plus: float
    half_angle: float
    spread_minus: float
    spread_plus: float

    @classmethod
    def from_config(cls, cfg: GeneratorConfig) -> Beams:
        spread = cfg.energy_spread
        return cls(
            e_minus=cfg.e_minus_gev,
            e_plus=cfg.e_plus_gev,
            half_angle=cfg.crossing_angle_rad / 2,
            spread_minus=cfg.e_minus_spread_gev if spread else 0.0,
            spread_plus=cfg.e_plus_spread_gev if spread else 0.0,
        )

    def four_momenta(
        self, e_minus: float | None = None, e_plus: float | None = None
    ) -> tuple[tuple[float, float, float, float], tuple[float, float, float, float]]:
        """(E, px, py, pz) of the e- and the e+ at the given (default nominal) energies."""
        em = self.e_minus if e_minus is None else e_minus
        ep = self.e_plus if e_plus is None else e_plus
        pm = math.sqrt(em * em - ELECTRON_MASS_GEV**2)
        pp = math.sqrt(ep * ep - ELECTRON_MASS_GEV**2)
        s, c = math.sin(self.half_angle), math.cos(self.half_angle)
        return (em, pm * s, 0.0, pm * c), (ep, pp * s, 0.0, -pp * c)

    def total(self) -> NDArray[np.float64]:
        """Nominal (E, px, py, pz) of the e+e- system."""
        km, kp = self.four_momenta()
        return np.add(km, kp)

    def sqrt_s(self) -> float:
        e, px, py, pz = self.total()
        return float(math.sqrt(e * e - px * px - py * py - pz * pz))


def beam_four_momentum(cfg: GeneratorConfig) -> NDArray[np.float64]:
    """Nominal (E, px, py, pz) of the colliding beams in the lab (no energy spread)."""
    return Beams.from_config(cfg).total()


# ---------------------------------------------------------------------------------------------
def _sin2_cos_theta(u: float) -> float:
    """cos θ distributed as 1 - cos²θ: the inverse of F(c) = (3c - c³ + 2)/4."""
    return 2.0 * math.cos((math.acos(1.0 - 2.0 * u) + 4.0 * math.pi) / 3.0)


def _boost(
    p: tuple[float, float, float, float], beta: tuple[float, float, float]
) -> tuple[float, float, float, float]:
    """Lorentz boost of (E, px, py, pz) by velocity beta."""
    bx, by, bz = beta
    b2 = bx * bx + by * by + bz * bz
    if b2 <= 0:
        return p
    gamma = 1.0 / math.sqrt(1.0 - b2)
    e, px, py, pz = p
    bp = bx * px + by * py + bz * pz
    k = (gamma - 1.0) * bp / b2 + gamma * e
    return gamma * (e + bp), px + k * bx, py + k * by, pz + k * bz


class _UpsilonSource:
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
                self.setBeamA(11, beams.e_minus)
                self.setBeamB(-11, beams.e_plus)
                self.setStrategy(3)
                self.addProcess(9999, 1.0, 0.0, 1.0)
                self.setXSec(0, 1.0)
                return True

            def setEvent(self, idProcess: int = 0) -> bool:
                source.fill(self)
                return True

        self.lha = _LHA()
        self.beams = beams
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
        beams = self.beams
        k_minus, k_plus = beams.four_momenta(
            beams.e_minus + beams.spread_minus * float(normal[0]),
            beams.e_plus + beams.spread_plus * float(normal[1]),
        )
        total = tuple(a + b for a, b in zip(k_minus, k_plus, strict=True))
        e, px, py, pz = total
        mass = math.sqrt(e * e - px * px - py * py - pz * pz)
        beta = (px / e, py / e, pz / e)
        minus_beta = (-beta[0], -beta[1], -beta[2])

        # Angular distribution relative to the e- direction in the Υ(4S) rest frame.
        _, ax, ay, az = _boost(k_minus, minus_beta)
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
        b_first = _boost((e_star, p_star * dx, p_star * dy, p_star * dz), beta)
        b_second = _boost((e_star, -p_star * dx, -p_star * dy, -p_star * dz), beta)

        tau = (self.b_tau0 * float(exponential[0]), self.b_tau0 * float(exponential[1]))
        oscillates = -1  # index (0 or 1) of the B that oscillates before it decays
        if self.mixing:
            later = 0 if tau[0] > tau[1] else 1
            dt = abs(tau[0] - tau[1]) / self.b_tau0
            if float(uniform[2]) < 0.5 * (1.0 - math.cos(X_D * dt)):
                oscillates = later

        me = ELECTRON_MASS_GEV
        lha.setProcess(9999, 1.0, mass, 1.0 / 137.036, 0.2)
        lha.addParticle(11, -1, 0, 0, 0, 0, *k_minus[1:], k_minus[0], me, 0.0, 9.0)
        lha.addParticle(-11, -1, 0, 0, 0, 0, *k_plus[1:], k_plus[0], me, 0.0, 9.0)
        lha.addParticle(300553, 2, 1, 2, 0, 0, px, py, pz, e, mass, 0.0, 9.0)
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


# ---------------------------------------------------------------------------------------------
def _common_settings(cfg: GeneratorConfig, seed: int) -> list[str]:
    settings = [
        "Print:quiet = on",
        "Random:setSeed = on",
        f"Random:seed = {seed}",
        # Long-lived particles (K_S, Lambda, K±, pi±, ...) stay undecayed, as at Belle II
        # generator level, where Geant4 decays them in the detector.
        "ParticleDecays:limitTau0 = on",
        "ParticleDecays:tau0Max = 10",
    ]
    if cfg.belle2_fragmentation:
        settings += BELLE2_FRAGMENTATION
    return settings


def _ffbar_settings(cfg: GeneratorConfig, bkg_type: str) -> list[str]:
    beams = Beams.from_config(cfg)
    (_, pxa, _, pza), (_, pxb, _, pzb) = beams.four_momenta()
    final = str(CONTINUUM_QUARK[bkg_type]) if bkg_type in CONTINUUM_QUARK else "15"
    settings = [
        "Beams:idA = 11",
        "Beams:idB = -11",
        "Beams:frameType = 3",
        f"Beams:pxA = {pxa!r}",
        f"Beams:pzA = {pza!r}",
        f"Beams:pxB = {pxb!r}",
        f"Beams:pzB = {pzb!r}",
        "PDF:lepton = on",
        "WeakSingleBoson:ffbar2gmZ = on",
        "23:onMode = off",
        f"23:onIfAny = {final}",
        "23:mMin = 5",
    ]
    if bkg_type == "taupair":
        # Mode 3: hadronic-current tau decays without spin correlations, ~20x faster than the
        # correlated default (mode 1); mode 0, the old isotropic model, is ~20x faster again.
        settings.append(f"TauDecays:mode = {3 if cfg.tau_decays == 'uncorrelated' else 0}")
    if beams.spread_minus > 0 or beams.spread_plus > 0:
        # Spread along z: the beams lean by only 41.5 mrad, so p_z ≈ |p| to 0.1 %.
        settings += [
            "Beams:allowMomentumSpread = on",
            f"Beams:sigmaPzA = {beams.spread_minus!r}",
            f"Beams:sigmaPzB = {beams.spread_plus!r}",
        ]
    return settings


_UPSILON_SETTINGS: tuple[str, ...] = (
    "Beams:frameType = 5",
    "300553:new = Upsilon(4S) void 3 0 0 10.5794 0.0205 10.0 11.2 0",
    "PDF:lepton = off",
    "PartonLevel:ISR = off",
    "PartonLevel:FSR = off",
    "PartonLevel:MPI = off",
    # The LHA event is built in the lab with crossing angle and energy spread; Pythia's LHA
    # beams are collinear, so its in/out matching and momentum check would reject it.
    "LesHouches:matchInOut = off",
    "Check:epTolErr = 0.1",
    "LesHouches:setLifetime = 0",  # decay times come from _UpsilonSource (coherent mixing)
    "ParticleDecays:mixB = off",
)


# ---------------------------------------------------------------------------------------------
def _is_hadron(abs_pdg: NDArray[np.int64]) -> NDArray[np.bool_]:
    """PDG numbering: hadrons have |pdg| >= 100 and a non-zero quark digit in the tens place
    (diquarks such as 2203 have 0 there); codes >= 10^7 are generator-specific."""
    return (abs_pdg >= 100) & (abs_pdg < 10_000_000) & ((abs_pdg // 10) % 10 != 0)


def select_particles(prt: ak.Array, bkg_code: int) -> EventBatch:
    """Convert Pythia's event records (from `nextBatch`) into an `EventBatch` of kept particles.

    Kept: hadrons, leptons and photons that are final (status > 0, E > 0; zero-energy
    beam-remnant photons are dropped) or decayed in a particle decay (their first daughter has
    status ±91-99), plus hadrons of the hard process (Υ(4S), B). Everything else (system and
    beam entries, partons, diquarks, γ*/Z, shower copies) is dropped. Each kept particle's
    mother is its nearest kept ancestor along mother1, or -1.
    """
    counts = ak.to_numpy(ak.num(prt, axis=1)).astype(np.int64)
    flat = ak.flatten(prt, axis=1)
    pdg = ak.to_numpy(flat["id"]).astype(np.int64)
    status = ak.to_numpy(flat["status"]).astype(np.int64)
    mother1 = ak.to_numpy(flat["mother1"]).astype(np.int64)
    daughter1 = ak.to_numpy(flat["daughter1"]).astype(np.int64)
    energy = ak.to_numpy(flat["p", "e"])

    start = np.repeat(offsets_from_counts(counts)[:-1], counts)

    abs_pdg = np.abs(pdg)
    physical = _is_hadron(abs_pdg) | ((abs_pdg >= 11) & (abs_pdg <= 16)) | (abs_pdg == 22)
    first_daughter = np.where(daughter1 > 0, start + daughter1, 0)
    daughter_status = np.abs(np.where(daughter1 > 0, status[first_daughter], 0))
    decayed = (status < 0) & (daughter_status >= 91) & (daughter_status <= 99)
    final = (status > 0) & (energy > 0)
    hard_hadron = (np.abs(status) >= 21) & (np.abs(status) <= 29) & _is_hadron(abs_pdg)
    keep = physical & (final | decayed | hard_hadron)

    # Nearest kept ancestor: walk mother1 (index 0 is Pythia's system entry = no mother).
    parent = np.where(mother1 > 0, start + mother1, -1)
    kept_index = np.flatnonzero(keep)
    ancestor = parent[kept_index]
    for _ in range(256):  # mother chains are short; the bound only guards against a cycle
        pending = ancestor >= 0
        pending[pending] = ~keep[ancestor[pending]]
        if not pending.any():
            break
        ancestor[pending] = parent[ancestor[pending]]
    ancestor = np.where((ancestor >= 0) & keep[np.maximum(ancestor, 0)], ancestor, -1)

    new_position = np.cumsum(keep) - 1  # position among kept particles, batch-wide
    event_index = np.repeat(np.arange(len(counts)), counts)
    kept_counts = np.bincount(event_index[keep], minlength=len(counts))
    new_offsets = offsets_from_counts(kept_counts)
    event_of_kept = np.repeat(np.arange(len(counts)), kept_counts)
    mother = np.where(
        ancestor >= 0, new_position[ancestor] - new_offsets[:-1][event_of_kept], -1
    ).astype(np.int32)

    def column(*path: str) -> NDArray[np.float64]:
        return ak.to_numpy(ak.fill_none(flat[path], 0.0))[kept_index]

    floats = {
        "E": column("p", "e"),
        "px": column("p", "px"),
        "py": column("p", "py"),
        "pz": column("p", "pz"),
        "x": column("vProd", "px") * CM_PER_MM,
        "y": column("vProd", "py") * CM_PER_MM,
        "z": column("vProd", "pz") * CM_PER_MM,
        "t": column("vProd", "e") / MM_PER_NS,
    }
    n = len(counts)
    return EventBatch(
        event_id=np.zeros(n, np.uint64),
        bkg_type=np.full(n, bkg_code, np.int8),
        seed=np.zeros(n, np.int64),
        offsets=new_offsets,
        pdg=pdg[kept_index].astype(np.int32),
        mother=mother,
        **{name: floats[name].astype(np.float32) for name in FLOAT_FIELDS},
    )


# ---------------------------------------------------------------------------------------------
class _TypeGenerator:
    """One background type: its own Pythia instance, seed and (for B pairs) LHA source."""

    MAX_EMPTY_ROUNDS = 20

    def __init__(self, cfg: GeneratorConfig, bkg_type: str, seed: int) -> None:
        self.cfg = cfg
        self.bkg_type = bkg_type
        self.code = bkg_type_code(bkg_type)
        self.seed = seed
        self._pythia: Any = None
        self._source: _UpsilonSource | None = None  # keeps the LHAup alive while Pythia runs

    def _build(self) -> Any:
        import pythia8mc  # heavy: imported where the generator runs, never at module import

        pythia = pythia8mc.Pythia("", False)
        settings = _common_settings(self.cfg, self.seed)
        if self.bkg_type in B_MESON:
            settings += _UPSILON_SETTINGS
        else:
            settings += _ffbar_settings(self.cfg, self.bkg_type)
        for line in settings:
            if not pythia.readString(line):
                raise RuntimeError(f"Pythia rejected setting '{line}'")
        if self.bkg_type in B_MESON:
            b_id = B_MESON[self.bkg_type]
            self._source = _UpsilonSource(
                pythia8mc,
                Beams.from_config(self.cfg),
                b_id=b_id,
                b_mass=pythia.particleData.m0(b_id),
                b_tau0_mm=pythia.particleData.tau0(b_id),
                mixing=self.bkg_type == "mixed",
                seed=self.seed,
            )
            pythia.setLHAupPtr(self._source.lha)
        if not pythia.init():
            raise RuntimeError(f"Pythia initialisation failed for {self.bkg_type}")
        return pythia

    def generate(self, n: int) -> EventBatch:
        if self._pythia is None:
            self._pythia = self._build()
        parts: list[EventBatch] = []
        have, empty_rounds = 0, 0
        while have < n:
            # 'skip' drops events Pythia failed on (rare), so top up until n are there.
            records = self._pythia.nextBatch(n - have, "skip")
            if len(records) == 0:
                empty_rounds += 1
                if empty_rounds > self.MAX_EMPTY_ROUNDS:
                    raise RuntimeError(f"Pythia produces no {self.bkg_type} events")
                continue
            parts.append(select_particles(records["prt"], self.code))
            have += len(parts[-1])
        return EventBatch.concat(parts)


class PythiaGenerator:
    """`EventSource` of generic Belle II background from Pythia 8 (see module docstring).

    Each event's type is drawn from the configured mixture; events of one type come from that
    type's own Pythia instance and are put back in drawn order. The random state comes from
    `stream_seed(cfg.seed, run, worker, incarnation)` (a fresh base seed when cfg.seed is
    None), and is independent of how the events are split into batches.

    Event ids: run | id worker | counter, where the id worker field is `worker` for the first
    incarnation and `worker + incarnation * n_workers` for a restarted one, so a restarted
    generator never reuses the ids of an earlier incarnation of any worker of the same run.
    """

    def __init__(
        self,
        cfg: GeneratorConfig,
        worker: int = 0,
        run: int = 0,
        incarnation: int = 0,
        n_workers: int = 1,
    ) -> None:
        self.cfg = cfg
        self.worker = worker
        self.run = run
        self.incarnation = incarnation
        if incarnation and not 0 <= worker < n_workers:
            raise UserError(f"worker number {worker} outside 0..{n_workers - 1}")
        self.id_worker = worker + incarnation * max(n_workers, 1)
        if incarnation and self.id_worker > MAX_WORKER:
            raise UserError(
                f"generator worker {worker} restarted {incarnation} times: the event-id worker "
                f"field (max {MAX_WORKER}) is used up; continue in a new run with another "
                "run.run_number"
            )
        make_event_ids(run, self.id_worker, 0, 0)  # validates run and worker now
        base = cfg.seed if cfg.seed is not None else fresh_seed()
        self.seed = stream_seed(base, run, worker, incarnation)
        mixture = cfg.mixture()
        self.types: tuple[str, ...] = tuple(t for t in BKG_TYPES if mixture.get(t, 0.0) > 0)
        self.fractions = np.array([mixture[t] for t in self.types], dtype=np.float64)
        self.fractions /= self.fractions.sum()
        self._type_rng = np.random.default_rng(
            np.random.SeedSequence([self.seed, 0x7A1E])  # its own stream, not a Pythia seed
        )
        self._generators = {
            t: _TypeGenerator(cfg, t, pythia_seed(self.seed, t)) for t in self.types
        }
        self._codes = np.array([g.code for g in self._generators.values()], dtype=np.int8)
        self.counter = 0

    def draw_types(self, n: int) -> NDArray[np.int8]:
        """Background type code of each of the next n events, from the mixture."""
        choice = self._type_rng.choice(len(self.types), size=n, p=self.fractions)
        return self._codes[choice]

    def next_batch(self, n: int) -> EventBatch:
        if n < 0:
            raise UserError(f"number of events must be >= 0, got {n}")
        codes = self.draw_types(n)
        parts: list[EventBatch] = []
        positions: list[NDArray[np.int64]] = []
        for generator in self._generators.values():
            where = np.flatnonzero(codes == generator.code)
            if len(where):
                parts.append(generator.generate(len(where)))
                positions.append(where)
        if not parts:
            return EventBatch.empty()
        grouped = EventBatch.concat(parts)
        order = np.argsort(np.concatenate(positions), kind="stable")
        batch = grouped.take(order)
        batch = replace(
            batch,
            event_id=make_event_ids(self.run, self.id_worker, self.counter, n),
            seed=np.full(n, self.seed, np.int64),
        )
        self.counter += n
        return batch


def generate_events(
    cfg: GeneratorConfig, n: int, worker: int = 0, run: int = 0, types: Sequence[str] = ()
) -> EventBatch:
    """Convenience: n events from a fresh generator (optionally restricted to `types`)."""
    if types:
        cfg = GeneratorConfig.model_validate({**cfg.model_dump(), "types": list(types)})
    return PythiaGenerator(cfg, worker=worker, run=run).next_batch(n)
