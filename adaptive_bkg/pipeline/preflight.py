"""Checks of the inputs, the machine and the output path that must pass before a production
starts: skims, policy, backend, checkpoint header, replay file, Ray address or resources, --out.

Everything here runs in the driver before Ray starts and before any file is written, so a
mistake costs one line and exit 2 (UserError) instead of a traceback from inside an actor, a
run that waits forever for CPUs the instance does not have, or a half-made run directory. None
of it needs torch: `plan.plan_run` makes these checks before it imports the stages.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from pathlib import Path

from adaptive_bkg.backends import make_backend, resolve_skim
from adaptive_bkg.backends.labelled import recorded_skims
from adaptive_bkg.checkpoints import resolve_checkpoint
from adaptive_bkg.config import Config, RayConfig
from adaptive_bkg.errors import UserError
from adaptive_bkg.model.checkpoint_header import read_header
from adaptive_bkg.physics.beams import Beams
from adaptive_bkg.stats.sampling import make_policy

MAX_OBJECT_STORE_FRACTION = 0.5
"""A local object store may take at most this share of the available memory (the actors need
the rest; Ray's own default is 30 %)."""


def check_run_dir(run_dir: Path) -> None:
    """`run_dir` is new or an empty directory, and can be created where it is asked for."""
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir} is an existing file, not a directory; pick a new --out")
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise UserError(
            f"run directory {run_dir} already exists and is not empty; use --resume {run_dir} "
            "to continue it, or remove it / pick a new --out"
        )
    parent = run_dir.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise UserError(f"--out {run_dir}: {parent} is a file, not a directory; pick a new --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserError(f"--out {run_dir}: cannot create it in {parent} (permission denied)")


def check_stage_inputs(cfg: Config, skims: Sequence[str]) -> None:
    """The default stages' inputs, checked without torch: every skim resolves, the policy builds
    for them, the checkpoint is an adaptive-bkg checkpoint (its header, read without torch), and
    the backend builds once here and is dropped: an unknown name or plugin, a plugin that fails
    to build, an external command template without {input}/{output}, a missing replay file, all
    fail now in one line instead of inside every simulate actor."""
    for skim in skims:
        resolve_skim(skim)
    make_policy(cfg.policy, skims)
    read_header(resolve_checkpoint(cfg.model.checkpoint, cfg.model.preset))
    make_backend(cfg.backend, skims, Beams.of(cfg.generator))


def machine_cpus() -> int:
    """CPUs this process may run on (its affinity mask: what a batch slot actually grants)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else (os.cpu_count() or 1)


def available_memory_mb() -> float | None:
    """MemAvailable from /proc/meminfo in MiB (None where there is no /proc)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def actor_cpus(rc: RayConfig) -> float:
    """CPUs the production's actors ask Ray for, all together."""
    return (
        rc.generators * rc.generator_cpus
        + rc.filter_cpus
        + rc.simulators * rc.simulator_cpus
        + rc.learner_cpus
    )


def check_local_ray(rc: RayConfig) -> None:
    """A local Ray instance fits this machine and the actors fit the instance (an actor whose
    CPUs the instance lacks would wait forever instead of failing)."""
    cpus = machine_cpus()
    if rc.num_cpus is not None and rc.num_cpus > cpus:
        raise UserError(
            f"ray.num_cpus = {rc.num_cpus} exceeds the {cpus} CPUs of this machine; leave it "
            "unset to use them all, or join a cluster with --address (docs/cluster.md)"
        )
    instance = rc.num_cpus if rc.num_cpus is not None else cpus
    wanted = actor_cpus(rc)
    if wanted > instance + 1e-9:
        raise UserError(
            f"the actors ask for {wanted:g} CPUs (ray.generators x generator_cpus + filter_cpus"
            f" + ray.simulators x simulator_cpus + learner_cpus) but the local Ray instance has "
            f"{instance}; lower them, or join a cluster with --address (docs/cluster.md)"
        )
    memory = available_memory_mb()
    if memory is not None and rc.object_store_mb > MAX_OBJECT_STORE_FRACTION * memory:
        raise UserError(
            f"ray.object_store_mb = {rc.object_store_mb} exceeds "
            f"{int(MAX_OBJECT_STORE_FRACTION * memory)} MiB, half of the {memory:.0f} MiB of "
            "memory available on this machine; the default 256 is plenty (batches are a few MiB)"
        )


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on an unreachable host:port: Ray itself retries for minutes before giving up."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(
            f"bad Ray address '{address}': use auto, host:port or ray://host:port (docs/cluster.md)"
        )
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UserError(
            f"cannot reach the Ray cluster at '{address}' ({exc.strerror or exc}); start one with "
            "`ray start --head` (docs/cluster.md) or leave out --address"
        ) from None


def check_replayable(cfg: Config, data: Path) -> None:
    """Fail before anything is written when `data` is missing, not an event file, or (with
    labels from the file) lacks labels for a requested skim."""
    # lazy: the generators package loads Pythia's record helpers (awkward, ~0.2 s), which a
    # `run` with bad input need not pay for
    from adaptive_bkg.generators.recorded import FileSource

    data = Path(data)
    if not data.exists():
        raise UserError(f"replay data {data} not found")
    FileSource(data)  # not Parquet, or neither events nor labelled events: one line
    if cfg.backend.name != "emulator":
        return  # labels come from the configured backend
    available = recorded_skims(data)
    absent = [s for s in cfg.run.skims if s not in available]
    if absent:
        raise UserError(
            f"{data} has no labels for skim(s) {', '.join(absent)} (it has: "
            f"{', '.join(available) or 'none'}); pick one of those with --skim, or label events "
            f"for it: adaptive-bkg label --skims {','.join(absent)} -o FILE"
        )
