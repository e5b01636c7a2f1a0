"""Belle II detector acceptance: the one definition the emulator and the model's inputs share.

Numbers from references/belle2_reference_numbers.md §2 (basf2 `AcceptanceVariables.cc`):
CDC 17° <= θ <= 150°; ECL forward 12.4°–31.4°, barrel 32.2°–128.7°, backward 130.7°–155.1°.
The tracking volume and the 0.1 GeV track pT threshold are the emulator's (DESIGN §4, and the
CDC inner/outer radius ~16 cm / 113 cm of the TDR, arXiv:1011.0352). Polar angles are lab-frame,
measured from the solenoid axis z; every range includes its ends (as the emulator applies them).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Acceptance:
    """Where the tracker and the calorimeter see a particle."""

    cdc_theta_deg: tuple[float, float] = (17.0, 150.0)
    ecl_theta_ranges_deg: tuple[tuple[float, float], ...] = (
        (12.4, 31.4),
        (32.2, 128.7),
        (130.7, 155.1),
    )
    track_pt_min_gev: float = 0.1  # DESIGN §4; the ROE mask uses 0.075
    # A track needs enough CDC layers: daughters of decays beyond this radius are lost;
    # 40 cm leaves ~2/3 of the layers. The half-length is an emulator choice (CDC ~1 m).
    tracker_radius_cm: float = 40.0
    tracker_half_z_cm: float = 60.0

    @property
    def ecl_envelope_deg(self) -> tuple[float, float]:
        """First and last polar angle the ECL covers (gaps included)."""
        return self.ecl_theta_ranges_deg[0][0], self.ecl_theta_ranges_deg[-1][1]


BELLE2_ACCEPTANCE = Acceptance()
