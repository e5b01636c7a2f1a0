"""Event shapes from per-particle 3-momenta, vectorised over a batch of events.

Particles are given as flat arrays with the index of their event (`event`, in [0, n)). All sums
go through `np.bincount`, which adds in input order, so a value does not depend on the batch.
Everything rests on the linearised momentum tensor T_ab = sum_i p_ia p_ib / |p_i|:

- Fox–Wolfram R2 = H2/H0 with sum_ij |p_i||p_j| P2(cos θ_ij) = 1.5 ||T||_F^2 - 0.5 (sum |p|)^2,
  so it costs O(n) per event instead of O(n^2);
- sphericity 1.5 (λ1 + λ2) and aplanarity 1.5 λ1 from the eigenvalues λ1 <= λ2 <= λ3 of
  T / sum |p| (they sum to 1);
- thrust sum |p·n| / sum |p| about an axis n: the thrust axis itself, or any other axis.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]


def event_sums(event: I64, values: F64 | None, n: int) -> F64:
    """Per-event sums of per-particle values (counts when `values` is None)."""
    return np.bincount(event, weights=values, minlength=n).astype(np.float64)


def momentum_tensor(event: I64, px: F64, py: F64, pz: F64, p: F64, n: int) -> F64:
    """[n, 3, 3] linearised momentum tensor sum_i p_ia p_ib / |p_i| (p > 0 for every particle)."""
    comps = (px, py, pz)
    tensor = np.empty((n, 3, 3))
    for a in range(3):
        for b in range(a, 3):
            tensor[:, a, b] = tensor[:, b, a] = event_sums(event, comps[a] * comps[b] / p, n)
    return tensor


def fox_wolfram_r2(tensor: F64, p_sum: F64) -> F64:
    """R2 = H2/H0 per event from the momentum tensor and sum |p|; 0 for an empty event."""
    h0 = np.maximum(p_sum**2, 1e-12)
    return np.where(p_sum > 0, (1.5 * (tensor**2).sum(axis=(1, 2)) - 0.5 * p_sum**2) / h0, 0.0)


def sphericity_axes(tensor: F64, p_sum: F64) -> tuple[F64, F64]:
    """Eigenvalues (ascending, [n, 3]) and eigenvectors (columns, [n, 3, 3]) of T / sum |p|."""
    values, vectors = np.linalg.eigh(tensor / np.maximum(p_sum, 1e-12)[:, None, None])
    return values, vectors


def sphericity(eigenvalues: F64) -> F64:
    return 1.5 * (eigenvalues[:, 0] + eigenvalues[:, 1])


def aplanarity(eigenvalues: F64) -> F64:
    return 1.5 * eigenvalues[:, 0]


def thrust_about(event: I64, px: F64, py: F64, pz: F64, axis: F64, p_sum: F64) -> F64:
    """sum |p·n| / sum |p| per event about the unit axes n ([n, 3]); 0 for an empty event."""
    proj = np.abs(px * axis[event, 0] + py * axis[event, 1] + pz * axis[event, 2])
    n = len(p_sum)
    return np.where(p_sum > 0, event_sums(event, proj, n) / np.maximum(p_sum, 1e-12), 0.0)


def thrust_axis(event: I64, px: F64, py: F64, pz: F64, tensor: F64, iterations: int = 4) -> F64:
    """[n, 3] unit thrust axes: start from the principal axis of the momentum tensor, then the
    standard iteration n <- sum sign(p·n) p, which climbs to the nearest maximum of sum |p·n|."""
    n = len(tensor)
    axis: F64 = np.linalg.eigh(tensor + 1e-12 * np.eye(3))[1][:, :, 2]
    comps = (px, py, pz)
    for _ in range(iterations):
        sign = np.sign(px * axis[event, 0] + py * axis[event, 1] + pz * axis[event, 2])
        new = np.stack([event_sums(event, sign * c, n) for c in comps], axis=1)
        norm = np.linalg.norm(new, axis=1, keepdims=True)
        axis = np.where(norm > 0, new / np.maximum(norm, 1e-12), axis)
    return axis
