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
  `upsilon.UpsilonSource`), and Pythia's own (incoherent) mixing is switched off.

Particles are kept as in basf2's smart background filter: hadrons, leptons and photons that are
in the final state or decayed (with their full decay tree); beam particles, partons, the γ*/Z
and shower bookkeeping copies are dropped. Mother indices point to the nearest kept ancestor
(-1 if none); see `pythia_records.select_particles`. Units: Pythia mm -> cm, mm/c -> ns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from adaptive_bkg.config import MAX_SEED, GeneratorConfig, fresh_seed
from adaptive_bkg.errors import UserError
from adaptive_bkg.formats.events import MAX_WORKER, EventBatch, make_event_ids
from adaptive_bkg.generators.pythia_records import select_particles
from adaptive_bkg.generators.upsilon import UpsilonSource
from adaptive_bkg.physics.beams import Beams
from adaptive_bkg.physics.pdg import PDG
from adaptive_bkg.physics.processes import BKG_TYPES, bkg_type_code

PYTHIA_MAX_SEED = 900_000_000

CONTINUUM_QUARK: dict[str, int] = {
    "uubar": PDG.U_QUARK,
    "ddbar": PDG.D_QUARK,
    "ssbar": PDG.S_QUARK,
    "ccbar": PDG.C_QUARK,
}
B_MESON: dict[str, int] = {"charged": PDG.B_PLUS, "mixed": PDG.B0}

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


def beam_four_momentum(cfg: GeneratorConfig) -> NDArray[np.float64]:
    """Nominal (E, px, py, pz) of the colliding beams in the lab (no energy spread)."""
    return np.asarray(Beams.of(cfg).total)


def energy_spread_gev(cfg: GeneratorConfig) -> tuple[float, float]:
    """Gaussian sigma of the e- and of the e+ beam energy (0 without `energy_spread`)."""
    if not cfg.energy_spread:
        return 0.0, 0.0
    return cfg.e_minus_spread_gev, cfg.e_plus_spread_gev


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
    (_, pxa, _, pza), (_, pxb, _, pzb) = Beams.of(cfg).four_momenta()
    spread_minus, spread_plus = energy_spread_gev(cfg)
    final = CONTINUUM_QUARK.get(bkg_type, PDG.TAU_MINUS)
    settings = [
        f"Beams:idA = {PDG.E_MINUS}",
        f"Beams:idB = {-PDG.E_MINUS}",
        "Beams:frameType = 3",
        f"Beams:pxA = {pxa!r}",
        f"Beams:pzA = {pza!r}",
        f"Beams:pxB = {pxb!r}",
        f"Beams:pzB = {pzb!r}",
        "PDF:lepton = on",
        "WeakSingleBoson:ffbar2gmZ = on",
        f"{PDG.Z0}:onMode = off",
        f"{PDG.Z0}:onIfAny = {final}",
        f"{PDG.Z0}:mMin = 5",
    ]
    if bkg_type == "taupair":
        # Mode 3: hadronic-current tau decays without spin correlations, ~20x faster than the
        # correlated default (mode 1); mode 0, the old isotropic model, is ~20x faster again.
        settings.append(f"TauDecays:mode = {3 if cfg.tau_decays == 'uncorrelated' else 0}")
    if spread_minus > 0 or spread_plus > 0:
        # Spread along z: the beams lean by only 41.5 mrad, so p_z ≈ |p| to 0.1 %.
        settings += [
            "Beams:allowMomentumSpread = on",
            f"Beams:sigmaPzA = {spread_minus!r}",
            f"Beams:sigmaPzB = {spread_plus!r}",
        ]
    return settings


_UPSILON_SETTINGS: tuple[str, ...] = (
    "Beams:frameType = 5",
    f"{PDG.UPSILON_4S}:new = Upsilon(4S) void 3 0 0 10.5794 0.0205 10.0 11.2 0",
    "PDF:lepton = off",
    "PartonLevel:ISR = off",
    "PartonLevel:FSR = off",
    "PartonLevel:MPI = off",
    # The LHA event is built in the lab with crossing angle and energy spread; Pythia's LHA
    # beams are collinear, so its in/out matching and momentum check would reject it.
    "LesHouches:matchInOut = off",
    "Check:epTolErr = 0.1",
    "LesHouches:setLifetime = 0",  # decay times come from UpsilonSource (coherent mixing)
    "ParticleDecays:mixB = off",
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
        self._source: UpsilonSource | None = None  # keeps the LHAup alive while Pythia runs

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
            self._source = UpsilonSource(
                pythia8mc,
                Beams.of(self.cfg),
                energy_spread_gev(self.cfg),
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
