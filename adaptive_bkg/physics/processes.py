"""The Belle II generic background processes: names, their integer codes and cross sections."""

from __future__ import annotations

from collections.abc import Sequence

from adaptive_bkg.errors import UserError

BKG_TYPES: tuple[str, ...] = ("charged", "mixed", "uubar", "ddbar", "ssbar", "ccbar", "taupair")
"""Belle II generic background samples; the index is the `bkg_type` code everywhere."""

CROSS_SECTIONS_NB: dict[str, float] = {
    # basf2 skim/tools/b2skim-stats-print (see references/belle2_reference_numbers.md §4)
    "charged": 0.555,
    "mixed": 0.555,
    "uubar": 1.61,
    "ddbar": 0.40,
    "ssbar": 0.38,
    "ccbar": 1.30,
    "taupair": 0.91,
}


def bkg_type_code(name: str) -> int:
    try:
        return BKG_TYPES.index(name)
    except ValueError:
        raise UserError(
            f"unknown background type '{name}' (allowed: {', '.join(BKG_TYPES)}, all)"
        ) from None


def parse_bkg_types(spec: str | Sequence[str]) -> tuple[str, ...]:
    """'all' | 'charged,mixed' | ['charged', 'mixed'] -> validated tuple in canonical order."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [n for n in names if n]
    if not names:
        raise UserError(f"no background types given (allowed: {', '.join(BKG_TYPES)}, all)")
    if "all" in names:
        return BKG_TYPES
    for name in names:
        bkg_type_code(name)
    return tuple(t for t in BKG_TYPES if t in names)
