"""The production loop on Ray: the only module that imports ray (DESIGN §1, §6).

Actors (each builds its heavy objects itself, from the picklable stage factory):
  N generator actors ─▶ 1 filter actor (GPU if any) ─▶ M simulate actors ─▶ 1 recorder actor
                                   ▲                          └──▶ 1 learner actor (GPU if any)
                                   └──── WeightsSnapshot (one object per version) ◀──┘
The driver chains object refs per batch (generate → filter → simulate → record / learn) and
keeps at most `ray.max_in_flight` batches in the pipeline (ray.wait), so memory stays flat
whatever the budget. `step.DriverStep`, shared with the serial driver (replay.py), decides what
each finished batch changes, whether the learner gets a batch (a slow one never stalls
production) and when the run stops.

Fault tolerance (docs/reliability.md): generator, filter, simulate and recorder actors restart
(max_restarts=-1) and their calls are retried (max_task_retries=-1): delivery is at-least-once
and the recorder drops duplicates by event_id.
- A restarted generator counts its incarnations in Ray's key-value store and starts a new
  random stream with new event ids (`PythiaGenerator`): it never replays physics.
- The filter receives, with every batch, the version it must decide with and the refs of the
  newest weights and policy: a restarted filter loads them itself before its first batch.
- The recorder writes every batch durably before it answers, so a restarted one re-reads the
  folder and continues; a redelivered batch is dropped as duplicate.
- The learner holds the training state and does not restart: production goes on with the
  newest published weights, and the console says so once.
- A batch that fails for good (e.g. the external backend after its retries) stops the run
  cleanly: in-flight batches are drained and the summary is written from the records.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ray
from ray._common.network_utils import node_ip_address_from_perspective
from ray._private import ray_constants
from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_put
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from adaptive_bkg.errors import UserError, first_line
from adaptive_bkg.interfaces import StageFactory
from adaptive_bkg.pipeline.budget import stop_on_signals
from adaptive_bkg.pipeline.preflight import check_local_ray, check_reachable
from adaptive_bkg.pipeline.runbook import RunBook, RunPlan, RunResult
from adaptive_bkg.pipeline.step import DriverStep, prime_learner
from adaptive_bkg.stages.learner import LearnerStatus
from adaptive_bkg.stages.recorder import RecorderStage, RecorderStatus
from adaptive_bkg.stages.types import (
    FilterOutput,
    GeneratedBatch,
    LabelledBatch,
    RecordBatch,
    WeightsSnapshot,
)

RESTARTABLE = {"max_restarts": -1, "max_task_retries": -1}
MIB = 1024 * 1024


# Ray's own switch for a single-machine instance (its default on macOS and Windows): the node IP
# is the loopback address, and then GCS, raylet, object manager, workers and agents listen on
# 127.0.0.1 only. Read by the driver (ray_constants, patched for the call) and by every process
# Ray starts (the environment they inherit).
_LOOPBACK_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


# glibc malloc in long-lived torch actors: with its default (dynamic) mmap threshold, freed
# batch-sized tensors stay in fragmented heaps and RSS creeps (benchmarks/soak.py, 30 min:
# filter +55 %, learner +60 % after warm-up); with these the filter stayed within 8 % and the
# learner's trend fell 4x (docs/reliability.md). Ray's processes inherit them from the driver
# at start; a value already set in the environment wins.
ACTOR_MALLOC_ENV = {
    "MALLOC_ARENA_MAX": "2",
    "MALLOC_MMAP_THRESHOLD_": "65536",
    "MALLOC_TRIM_THRESHOLD_": "131072",
}


def init_ray(address: str | None, num_cpus: int | None, object_store_mb: int) -> bool:
    """Connect to (or start) Ray; True if this call started it (and should shut it down).

    Without `address` a private instance starts that listens on 127.0.0.1 only (with auth
    disabled, anything that could reach it could run code). Joining a cluster is explicit.
    """
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # at run time only, never at import
    if address:  # an existing cluster: resources are the cluster's
        check_reachable(address)
        joining = _loopback_only() if _loopback_only_instance(address) else contextlib.nullcontext()
        try:
            with joining:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
            # A cluster with token auth refuses a driver without its token the same way (Ray
            # retries, logs InvalidAuthToken, then raises ConnectionError): name both causes.
            first = first_line(exc)
            raise UserError(
                f"cannot join the Ray cluster at '{address}' ({first[:160]}); start one with "
                "`ray start --head` or leave out --address; if it uses token authentication, "
                "set RAY_AUTH_MODE=token and its token (docs/cluster.md)"
            ) from None
    else:
        with _loopback_only(), _environment_defaults(ACTOR_MALLOC_ENV):
            ray.init(
                address="local",
                num_cpus=num_cpus,
                include_dashboard=False,
                object_store_memory=object_store_mb * MIB,
                log_to_driver=False,
                logging_level=logging.WARNING,
            )
    return True


def _loopback_only_instance(address: str) -> bool:
    """True for host:port on the loopback interface that this machine's network address does
    not also serve: a loopback-only instance (like the one init_ray starts), which a driver
    can join only in the same single-machine mode (else Ray dials the network address)."""
    if address in ("auto", "local") or address.startswith("ray://"):
        return False
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        if not (host == "localhost" or ipaddress.ip_address(host).is_loopback):
            return False
    except ValueError:
        return False

    try:
        socket.create_connection((node_ip_address_from_perspective(), int(port)), 1.0).close()
    except (OSError, ValueError):
        return True
    return False


@contextlib.contextmanager
def _environment_defaults(values: dict[str, str]) -> Iterator[None]:
    """Set the variables not already set, for the processes started inside; then restore."""
    added = [k for k in values if k not in os.environ]
    os.environ.update({k: values[k] for k in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


@contextlib.contextmanager
def _loopback_only() -> Iterator[None]:
    """Start a local Ray whose every process binds to the loopback interface only."""

    before_env = os.environ.get(_LOOPBACK_ONLY_ENV)
    before = ray_constants.ENABLE_RAY_CLUSTER
    os.environ[_LOOPBACK_ONLY_ENV] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before
        if before_env is None:
            os.environ.pop(_LOOPBACK_ONLY_ENV, None)
        else:
            os.environ[_LOOPBACK_ONLY_ENV] = before_env


def _count_start(key: str) -> int:
    """How many times this key was counted before (0 at the first start of an actor). Ray
    restarts an actor by running __init__ again with the same arguments, and never runs two
    incarnations at once, so a read-then-write on the cluster's key-value store is safe."""

    raw = _internal_kv_get(key)
    count = int(raw) if raw else 0
    _internal_kv_put(key, str(count + 1).encode(), overwrite=True)
    return count


class _Actor:
    def pid(self) -> int:
        """The worker process id (operators and fault tests kill actors by pid)."""
        return os.getpid()


class _GeneratorActor(_Actor):
    def __init__(
        self, factory: StageFactory, worker: int, run: int, first_incarnation: int, key: str
    ) -> None:
        incarnation = first_incarnation + _count_start(key)
        self.stage = factory.generator(worker, run, incarnation)

    def next_batch(self, n: int) -> GeneratedBatch:
        return self.stage.next_batch(n)


class _FilterActor(_Actor):
    def __init__(self, factory: StageFactory) -> None:
        self.stage = factory.filter()

    def filter(
        self, generated: GeneratedBatch, version: int, snapshots: list[ray.ObjectRef]
    ) -> FilterOutput:
        """Decide with model version `version`. `snapshots` = [newest snapshot with weights,
        newest snapshot] (refs, not values: fetched only when this filter is behind, e.g.
        after a restart, since Ray resolves only top-level ref arguments)."""
        if self.stage.version < version:
            weights, newest = snapshots
            if self.stage.version < 0 and weights != newest:
                self.stage.swap(ray.get(weights))  # a policy-only version needs weights first
            self.stage.swap(ray.get(newest))
        return self.stage.filter(generated)


class _SimulateActor(_Actor):
    def __init__(self, factory: StageFactory, index: int) -> None:
        self.stage = factory.simulator(index)

    def simulate(self, filtered: FilterOutput) -> tuple[RecordBatch, LabelledBatch]:
        return self.stage.simulate(filtered)


class _LearnerActor(_Actor):
    def __init__(self, factory: StageFactory) -> None:
        self.stage = factory.learner()

    def observe_generated(self, generated: GeneratedBatch) -> None:
        prime_learner(self.stage, generated)

    def initial_snapshot(self, version: int) -> WeightsSnapshot:
        return self.stage.initial_snapshot(version)

    def ingest(self, labelled: LabelledBatch) -> LearnerStatus:
        return self.stage.ingest(labelled)

    def latest_snapshot(self) -> WeightsSnapshot:
        return self.stage.latest_snapshot()

    def full_snapshot(self) -> WeightsSnapshot:
        return self.stage.full_snapshot()


class _RecorderActor(_Actor):
    def __init__(self, records_dir: str, skims: tuple[str, ...]) -> None:
        self.stage = RecorderStage(Path(records_dir), skims)

    def record(self, records: RecordBatch) -> RecorderStatus:
        return self.stage.record(records)

    def close(self) -> RecorderStatus:
        return self.stage.close()


def _gpu_share(plan: RunPlan) -> float:
    use = plan.cfg.ray.use_gpu
    gpus = float(ray.cluster_resources().get("GPU", 0.0))
    if use is False or gpus <= 0:
        return 0.0
    return 1.0 if gpus >= 2 else 0.5  # one GPU: filter and learner share it


def _remote(cls: type, **options: Any) -> Any:
    return ray.remote(cls).options(**options)


@contextlib.contextmanager
def _own_process_group() -> Iterator[None]:
    """Start Ray's processes in a process group of their own.

    `timeout`, Slurm and HTCondor stop a job by signalling its whole process group. Ray's GCS
    and raylet, started as children of the driver, would die at once and leave the driver no
    cluster to finish on. The driver becomes the leader of a new group while Ray starts (the
    children inherit it) and then returns to its own group, so a group signal reaches the
    driver alone, which stops cleanly and shuts Ray down itself. Ray's children still die with
    the driver if it is SIGKILLed (Ray ties their lifetime to it)."""
    try:
        original = os.getpgid(0)
        os.setpgid(0, 0)
    except OSError:  # a session leader cannot move: Ray shares its group as before
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.setpgid(0, original)


def run_pipeline(plan: RunPlan, show_live: bool | None = None) -> RunResult:
    """Run a validated production on Ray (local instance or `ray.address`)."""
    cfg = plan.cfg
    if cfg.ray.address is None and not ray.is_initialized():
        check_local_ray(cfg.ray)  # before Ray starts and before the run directory exists
    with _own_process_group():
        started = init_ray(cfg.ray.address, cfg.ray.num_cpus, cfg.ray.object_store_mb)
    try:
        return _run(plan, show_live)
    except ray.exceptions.RayTaskError as exc:
        # A user error raised inside an actor (bad input found late): one line, exit 2.
        if isinstance(exc.cause, UserError):
            raise UserError(str(exc.cause)) from None
        raise
    finally:
        if started:
            ray.shutdown()


def _first_line(exc: BaseException) -> str:
    """An actor's error in one line: the user's exception rather than Ray's wrapper."""
    cause = getattr(exc, "cause", None)
    return first_line(cause if isinstance(cause, BaseException) else exc)[:300]


def _run(plan: RunPlan, show_live: bool | None) -> RunResult:
    cfg, factory, rc = plan.cfg, plan.factory, plan.cfg.ray
    book = RunBook(plan, show_live=show_live)
    gpu = _gpu_share(plan)
    token = secrets.token_hex(6)  # names this driver's actors and incarnation counters
    # The recorder writes the run directory: pin it to the driver's node.
    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
    generators = [
        _remote(
            _GeneratorActor, name=f"generator{w}-{token}", num_cpus=rc.generator_cpus, **RESTARTABLE
        ).remote(
            factory,
            w,
            cfg.run.run_number,
            plan.resume.first_incarnation,
            f"adaptive-bkg/{token}/generator{w}",
        )
        for w in range(rc.generators)
    ]
    filt = _remote(
        _FilterActor, name=f"filter-{token}", num_cpus=rc.filter_cpus, num_gpus=gpu, **RESTARTABLE
    ).remote(factory)
    simulators = [
        _remote(
            _SimulateActor, name=f"simulate{i}-{token}", num_cpus=rc.simulator_cpus, **RESTARTABLE
        ).remote(factory, i)
        for i in range(rc.simulators)
    ]
    learner = _remote(
        _LearnerActor, name=f"learner-{token}", num_cpus=rc.learner_cpus, num_gpus=gpu
    ).remote(factory)
    recorder = _remote(
        _RecorderActor,
        name=f"recorder-{token}",
        num_cpus=0,
        scheduling_strategy=here,
        **RESTARTABLE,
    ).remote(str(book.records_dir), plan.skims)

    step = DriverStep(plan, book)
    in_flight: dict[ray.ObjectRef, int] = {}  # recorder status ref -> events in that batch
    learning: list[ray.ObjectRef] = []
    # The filter decides every batch with the version current at launch; it fetches the
    # snapshot itself when it is behind (first batch, or after a restart).
    snapshots: list[ray.ObjectRef] = []

    def adopt(snapshot_ref: ray.ObjectRef) -> None:
        # One object per version: its ref goes to the filter with the next batches and,
        # fetched once, to the checkpoint file.
        nonlocal snapshots
        snapshot: WeightsSnapshot = ray.get(snapshot_ref)
        weights_ref = snapshot_ref if snapshot.state_dict is not None else snapshots[0]
        snapshots = [weights_ref, snapshot_ref]
        step.adopt(snapshot)

    try:
        with stop_on_signals(book.flag), book.live:
            try:
                n = step.next_size()
                first = generators[0].next_batch.remote(n) if n else None
                if first is not None:
                    learner.observe_generated.remote(first)
                adopt(learner.initial_snapshot.remote(step.first_version))
                while True:
                    while step.may_launch(len(in_flight), len(learning)):
                        n = step.next_size()
                        if n == 0:
                            break
                        gen = generators[step.generator_index(len(generators))]
                        gen_ref = first if first is not None else gen.next_batch.remote(n)
                        first = None
                        sim = simulators[step.n_batches % len(simulators)]
                        records_ref, labelled_ref = sim.simulate.options(num_returns=2).remote(
                            filt.filter.remote(gen_ref, step.version, snapshots)
                        )
                        in_flight[recorder.record.remote(records_ref)] = n
                        to_learner = step.learns_from_next(len(learning))
                        if to_learner:
                            learning.append(learner.ingest.remote(labelled_ref))
                        step.launched_batch(n, to_learner)
                    if not in_flight and not learning:
                        break
                    ready, _ = ray.wait([*in_flight, *learning], num_returns=1, timeout=0.5)
                    for ref in ready:
                        if ref in in_flight:
                            del in_flight[ref]
                            try:
                                step.recorded(ray.get(ref))
                            except ray.exceptions.RayError as exc:
                                step.batch_failed(_first_line(exc))
                        else:
                            learning.remove(ref)
                            if not step.learner_alive:
                                continue
                            try:
                                if step.learned(ray.get(ref)):
                                    adopt(learner.latest_snapshot.remote())
                            except ray.exceptions.RayError as exc:
                                step.learner_lost(f"{type(exc).__name__}: {_first_line(exc)}")
                    step.check_stop()
            finally:
                # Whatever happened, in-flight batches are finished (the loop above drains them
                # on a normal stop) and the records are closed before the summary is written.
                for ref in list(in_flight):
                    with contextlib.suppress(ray.exceptions.RayError):
                        step.recorded(ray.get(ref))
                final = ray.get(recorder.close.remote())
        snapshot: WeightsSnapshot | None = None
        if step.learner_alive:
            with contextlib.suppress(ray.exceptions.RayError):
                snapshot = ray.get(learner.full_snapshot.remote())
    finally:
        # Release the actors' resources now, also after an error (a shared cluster may run
        # the next job at once; Ray alone frees them only when the driver exits).
        for actor in [*generators, filt, *simulators, learner, recorder]:
            with contextlib.suppress(ray.exceptions.RayError):
                ray.kill(actor, no_restart=True)
    return step.finish(final, snapshot)
