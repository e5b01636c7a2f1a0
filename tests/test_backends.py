"""Backend registry, the contract every backend meets, and external/replay specifics."""

from __future__ import annotations

import shlex
import sys
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from adaptive_bkg.backends import (
    load_object,
    make_backend,
    register_backend,
    registered_backends,
    resolve_skim,
)
from adaptive_bkg.backends.emulator.cost import WallClock
from adaptive_bkg.backends.labelled import ReplayBackend, record_labels, recorded_skims
from adaptive_bkg.config import BackendConfig, CostConfig, ExternalConfig, ReplayConfig
from adaptive_bkg.errors import UserError
from adaptive_bkg.formats.events import MAX_RUN, EventBatch, make_event_ids, write_events
from adaptive_bkg.interfaces import SimResult, SimulationBackend

REPO = Path(__file__).resolve().parents[1]
STEERING = REPO / "sims" / "steering_example.py"
CONTRACT_SKIMS = ("dstar-d0pi", "tau-generic", "low-mult-2trk")
EXTERNAL_COMMAND = (
    f"{shlex.quote(sys.executable)} {shlex.quote(str(STEERING))} --in {{input}} --out {{output}} "
    "--skims {skims} --config {config}"
)

SyntheticEvents = Callable[..., EventBatch]


class ParityBackend:
    """A toy backend: skim j passes when (event_id + j) is even; cost = 1 + n_particles."""

    def __init__(self, cfg: BackendConfig, skims: Sequence[str] | None = None) -> None:
        self._skims = tuple(skims or ("even", "odd"))

    @property
    def skims(self) -> tuple[str, ...]:
        return self._skims

    def simulate(self, batch: EventBatch) -> SimResult:
        shift = np.arange(len(self._skims), dtype=np.uint64)
        flags = (batch.event_id[:, None] + shift[None, :]) % np.uint64(2) == 0
        return SimResult(batch.event_id.copy(), flags, 1.0 + batch.n_particles.astype(np.float64))


@pytest.fixture(scope="module")
def contract_events(small_events: EventBatch) -> EventBatch:
    """300 Pythia events of the generic mixture: some pass each contract skim, most fail."""
    return small_events.take(np.arange(300))


# ---------------------------------------------------------------------------------------------
# The contract, run against every backend.
@pytest.fixture(scope="module", params=["emulator", "external", "replay"])
def backend(
    request: pytest.FixtureRequest,
    contract_events: EventBatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> SimulationBackend:
    kind = request.param
    if kind == "emulator":
        return make_backend(BackendConfig(name="emulator"), CONTRACT_SKIMS)
    if kind == "external":
        cfg = BackendConfig(name="external", external=ExternalConfig(command=EXTERNAL_COMMAND))
        return make_backend(cfg, CONTRACT_SKIMS)
    labels = tmp_path_factory.mktemp("replay") / "labels.parquet"
    emulator = make_backend(BackendConfig(name="emulator"), CONTRACT_SKIMS)
    record_labels(contract_events.split(128), emulator, labels)
    return make_backend(BackendConfig(name="replay", replay=ReplayConfig(path=labels)), None)


def check_result(result: SimResult, batch: EventBatch, n_skims: int) -> None:
    assert result.event_id.dtype == np.uint64
    np.testing.assert_array_equal(result.event_id, batch.event_id)
    assert result.flags.shape == (len(batch), n_skims)
    assert result.flags.dtype == np.bool_
    assert result.cost_s.shape == (len(batch),)
    assert result.cost_s.dtype == np.float64
    assert np.isfinite(result.cost_s).all()
    assert (result.cost_s > 0).all()


def test_contract_skims(backend: SimulationBackend) -> None:
    assert isinstance(backend, SimulationBackend)
    assert backend.skims == CONTRACT_SKIMS


def test_contract_ids_in_input_order(
    backend: SimulationBackend, contract_events: EventBatch
) -> None:
    shuffled = contract_events.take(np.random.default_rng(0).permutation(len(contract_events)))
    check_result(backend.simulate(shuffled), shuffled, len(CONTRACT_SKIMS))


def test_contract_deterministic(backend: SimulationBackend, contract_events: EventBatch) -> None:
    first, second = backend.simulate(contract_events), backend.simulate(contract_events)
    check_result(first, contract_events, len(CONTRACT_SKIMS))
    assert first.flags.tobytes() == second.flags.tobytes()
    assert first.cost_s.tobytes() == second.cost_s.tobytes()


def test_contract_independent_of_batching(
    backend: SimulationBackend, contract_events: EventBatch
) -> None:
    # An event's labels must not depend on its neighbours: Ray retries and re-batching resend
    # events in other company, and replay looks events up one by one.
    whole = backend.simulate(contract_events)
    parts = [backend.simulate(b) for b in contract_events.split(128)]
    assert np.concatenate([p.flags for p in parts]).tobytes() == whole.flags.tobytes()
    assert np.concatenate([p.cost_s for p in parts]).tobytes() == whole.cost_s.tobytes()


def test_contract_empty_batch(backend: SimulationBackend) -> None:
    check_result(backend.simulate(EventBatch.empty()), EventBatch.empty(), len(CONTRACT_SKIMS))


def test_contract_batch_of_one(backend: SimulationBackend, contract_events: EventBatch) -> None:
    one = contract_events.take(np.array([3]))
    check_result(backend.simulate(one), one, len(CONTRACT_SKIMS))


# ---------------------------------------------------------------------------------------------
# External backend: bit-exact against the in-process emulator, and its error paths.
@pytest.mark.parametrize("output_format", ["parquet", "csv"])
def test_external_matches_in_process_emulator(
    contract_events: EventBatch, output_format: str
) -> None:
    command = EXTERNAL_COMMAND + f" --format {output_format}"
    external = make_backend(
        BackendConfig(name="external", seed=3, external=ExternalConfig(command=command)),
        CONTRACT_SKIMS,
    )
    emulator = make_backend(BackendConfig(name="emulator", seed=3), CONTRACT_SKIMS)
    ext, emu = external.simulate(contract_events), emulator.simulate(contract_events)
    assert 0 < emu.flags.sum() < emu.flags.size  # the comparison sees passing and failing events
    np.testing.assert_array_equal(ext.event_id, emu.event_id)
    assert ext.flags.tobytes() == emu.flags.tobytes()
    assert ext.cost_s.tobytes() == emu.cost_s.tobytes()  # CSV floats round-trip exactly too


def test_external_csv_keeps_64_bit_ids(make_synthetic_events: SyntheticEvents) -> None:
    # Ids from run numbers >= 2^19 exceed 2^63; a CSV round trip must not turn them into floats.
    events = make_synthetic_events(20, seed=8)
    events = replace(events, event_id=make_event_ids(MAX_RUN, 7, 0, len(events)))
    assert events.event_id.min() > 2**63
    command = EXTERNAL_COMMAND + " --format csv"
    cfg = BackendConfig(name="external", external=ExternalConfig(command=command))
    result = make_backend(cfg, CONTRACT_SKIMS).simulate(events)
    emulated = make_backend(BackendConfig(), CONTRACT_SKIMS).simulate(events)
    np.testing.assert_array_equal(result.event_id, events.event_id)
    assert result.flags.tobytes() == emulated.flags.tobytes()


def script_backend(tmp_path: Path, body: str, **external: object) -> SimulationBackend:
    """An external backend running a small Python script; `body` sees ids, out, skims."""
    script = tmp_path / "script.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, time
            import pyarrow as pa, pyarrow.parquet as pq
            src, out, skims = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
            ids = pq.read_table(src).column("event_id").to_numpy()
            def write(ids, cost=None, drop=()):
                cols = {"event_id": pa.array(ids, pa.uint64())}
                cols.update({s: pa.array([True] * len(ids)) for s in skims if s not in drop})
                if "cost_s" not in drop:
                    cols["cost_s"] = pa.array([0.5] * len(ids) if cost is None else cost)
                pq.write_table(pa.table(cols), out)
            """
        )
        + textwrap.dedent(body)
    )
    command = (
        f"{shlex.quote(sys.executable)} {shlex.quote(str(script))} {{input}} {{output}} {{skims}}"
    )
    external = {"retry_pause_s": 0.0, **external}  # retries without the production pause
    cfg = BackendConfig(name="external", external=ExternalConfig(command=command, **external))
    return make_backend(cfg, ("a", "b"))


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("write(ids)", None),
        ("write(ids[::-1])", None),  # any row order is fine
        ("write(ids[1:])", "no labels for event ids"),
        ("write(list(ids) + [123456789])", "not sent: 123456789"),
        ("write(list(ids) + [ids[0]])", "duplicate event ids"),
        ("write(ids, drop=('b',))", "lacks columns ['b']"),
        ("write(ids, drop=('cost_s',))", "lacks columns ['cost_s']"),
        ("write(ids, cost=[float('nan')] * len(ids))", "cost_s must be finite"),
        (
            "sys.stderr.write('loading geometry\\nFATAL: no conditions\\n'); sys.exit(3)",
            "exit status 3: FATAL: no conditions",
        ),
        ("pass", "wrote no output file"),
        ("open(out, 'w').write('garbage, no\\n\\x00\\x01')", "cannot read output"),
    ],
)
def test_external_output_validation(
    tmp_path: Path, body: str, message: str | None, make_synthetic_events: SyntheticEvents
) -> None:
    events = make_synthetic_events(7, seed=2)
    backend = script_backend(tmp_path, body)
    if message is None:
        result = backend.simulate(events)
        np.testing.assert_array_equal(result.event_id, events.event_id)
        assert result.flags.all()
        assert (result.cost_s == 0.5).all()
        return
    with pytest.raises(UserError) as info:
        backend.simulate(events)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_external_timeout(tmp_path: Path, make_synthetic_events: SyntheticEvents) -> None:
    backend = script_backend(tmp_path, "time.sleep(30)", timeout_s=1.0)
    with pytest.raises(UserError, match=r"timed out after 1 s .*backend\.external\.timeout_s"):
        backend.simulate(make_synthetic_events(3, seed=2))


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
    return "\nState:\tZ" not in status  # a zombie has already been killed


def test_external_timeout_ends_child_processes(
    tmp_path: Path, make_synthetic_events: SyntheticEvents
) -> None:
    # basf2 may start helper processes; a timeout must not leave them running.
    pid_file = tmp_path / "child.pid"
    body = f"""
        import subprocess
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        open({str(pid_file)!r}, "w").write(str(child.pid))
        time.sleep(60)
    """
    backend = script_backend(tmp_path, body, timeout_s=4.0)  # time to start on a busy machine
    with pytest.raises(UserError, match="timed out"):
        backend.simulate(make_synthetic_events(3, seed=2))
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 10  # SIGKILL is immediate; allow a loaded machine to reap
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def test_external_keeps_files_when_asked(
    tmp_path: Path, make_synthetic_events: SyntheticEvents
) -> None:
    work = tmp_path / "work"
    backend = script_backend(tmp_path, "write(ids)", workdir=work, keep_files=True)
    backend.simulate(make_synthetic_events(3, seed=2))
    (folder,) = work.iterdir()
    assert {p.name for p in (folder / "attempt-1").iterdir()} == {
        "events.parquet",
        "labels.parquet",
        "backend.yaml",
    }


def test_external_retries_a_failed_batch(
    tmp_path: Path, make_synthetic_events: SyntheticEvents
) -> None:
    """A command that fails twice (exit status, then no output) and then works: the batch is
    retried and succeeds; one that always fails stops after 1 + retries attempts."""
    flaky = """
        import pathlib
        count = pathlib.Path(out).parents[1] / "count"
        n = int(count.read_text()) if count.exists() else 0
        count.write_text(str(n + 1))
        if n == 0:
            sys.exit(7)
        if n == 1:
            sys.exit(0)  # no output file
        write(ids)
    """
    work = tmp_path / "work"
    backend = script_backend(tmp_path, flaky, workdir=work, keep_files=True)
    events = make_synthetic_events(4, seed=2)
    result = backend.simulate(events)
    np.testing.assert_array_equal(result.event_id, events.event_id)
    (folder,) = work.iterdir()
    assert (folder / "count").read_text() == "3"
    always = script_backend(tmp_path, "sys.exit(5)", retries=1)
    with pytest.raises(
        UserError, match=r"exit status 5: .*\(2 attempts; backend\.external\.retries"
    ):
        always.simulate(events)
    malformed = script_backend(tmp_path, "write(ids[1:])", retries=5)
    with pytest.raises(UserError, match="no labels for event ids") as info:
        malformed.simulate(events)  # a bug in the command's output is not retried
    assert "attempts" not in str(info.value)


@pytest.mark.parametrize(
    ("command", "skims", "message"),
    [
        ("", ("a",), "backend.external.command is empty"),
        ("run {input}", ("a",), "must contain {input} and {output}"),
        ("run {input} {output} {evil}", ("a",), "unknown placeholders ['evil']"),
        ("run {input} {output}", None, "needs the skim names"),
        ("run '{input} {output}", ("a",), "cannot split into words (No closing quotation)"),
    ],
)
def test_external_config_errors(command: str, skims: tuple[str, ...] | None, message: str) -> None:
    cfg = BackendConfig(name="external", external=ExternalConfig(command=command))
    with pytest.raises(UserError) as info:
        make_backend(cfg, skims)
    assert message in str(info.value)


def test_external_program_not_found(make_synthetic_events: SyntheticEvents) -> None:
    command = "/nonexistent/basf2 steer.py -- --in {input} --out {output}"
    backend = make_backend(
        BackendConfig(name="external", external=ExternalConfig(command=command)), ("a",)
    )
    with pytest.raises(UserError, match="program not found"):
        backend.simulate(make_synthetic_events(2, seed=1))


# ---------------------------------------------------------------------------------------------
# Replay.
@pytest.fixture
def parity_labels(
    tmp_path: Path, make_synthetic_events: SyntheticEvents
) -> tuple[Path, EventBatch]:
    events = make_synthetic_events(40, seed=9)
    path = tmp_path / "labels.parquet"
    recorded = record_labels(events.split(15), ParityBackend(BackendConfig()), path)
    assert recorded.n_events == 40
    assert recorded.skims == ("even", "odd")
    assert recorded.n_pass[0] + recorded.n_pass[1] == 40  # every id is either even or odd
    return path, events


def test_replay_returns_recorded_labels(parity_labels: tuple[Path, EventBatch]) -> None:
    path, events = parity_labels
    truth = ParityBackend(BackendConfig()).simulate(events)
    replay = ReplayBackend(BackendConfig(replay=ReplayConfig(path=path)), ("odd",))
    assert len(replay) == 40
    reversed_events = events.take(np.arange(len(events))[::-1])
    result = replay.simulate(reversed_events)
    np.testing.assert_array_equal(result.event_id, reversed_events.event_id)
    np.testing.assert_array_equal(result.flags[:, 0], truth.flags[::-1, 1])
    np.testing.assert_array_equal(result.cost_s, truth.cost_s[::-1])
    assert replay.clock.spent_s == pytest.approx(truth.cost_s.sum())
    assert recorded_skims(path) == ("even", "odd")


def test_replay_missing_event_is_a_user_error(
    parity_labels: tuple[Path, EventBatch], make_synthetic_events: SyntheticEvents
) -> None:
    path, events = parity_labels
    replay = ReplayBackend(BackendConfig(replay=ReplayConfig(path=path)))
    unknown = make_synthetic_events(2, seed=9, first_counter=1000)
    with pytest.raises(UserError, match=f"no labels for event ids {unknown.event_id[0]}"):
        replay.simulate(EventBatch.concat([events.take(np.array([0])), unknown]))
    beyond = make_synthetic_events(1, seed=4095, first_counter=0)  # larger than every id
    with pytest.raises(UserError, match="no labels"):
        replay.simulate(beyond)


def test_replay_config_errors(parity_labels: tuple[Path, EventBatch], tmp_path: Path) -> None:
    path, events = parity_labels
    with pytest.raises(UserError, match="needs a labels file"):
        ReplayBackend(BackendConfig())
    with pytest.raises(UserError, match=r"no labels for skims \['radiative'\] \(it has: even, odd"):
        ReplayBackend(BackendConfig(replay=ReplayConfig(path=path)), ("radiative",))
    write_events(tmp_path / "events.parquet", events)
    with pytest.raises(UserError, match="expected an adaptive-bkg 'labels' file, found a 'events'"):
        ReplayBackend(BackendConfig(replay=ReplayConfig(path=tmp_path / "events.parquet")))
    with pytest.raises(UserError, match="no such file"):
        ReplayBackend(BackendConfig(replay=ReplayConfig(path=tmp_path / "absent.parquet")))


def test_replay_reads_labelled_events_training_sets(
    tmp_path: Path, make_synthetic_events: SyntheticEvents
) -> None:
    from adaptive_bkg.formats.labelled import write_labelled

    events = make_synthetic_events(30, seed=6)
    truth = ParityBackend(BackendConfig()).simulate(events)
    write_labelled(tmp_path / "train.parquet", events, truth, ("even", "odd"))
    replay = ReplayBackend(BackendConfig(replay=ReplayConfig(path=tmp_path / "train.parquet")))
    assert replay.skims == ("even", "odd")
    result = replay.simulate(events)
    assert result.flags.tobytes() == truth.flags.tobytes()
    assert result.cost_s.tobytes() == truth.cost_s.tobytes()


def test_replay_rejects_duplicate_ids(
    tmp_path: Path, make_synthetic_events: SyntheticEvents
) -> None:
    events = make_synthetic_events(5, seed=1)
    path = tmp_path / "dup.parquet"
    record_labels([events, events.take(np.array([2]))], ParityBackend(BackendConfig()), path)
    with pytest.raises(UserError, match=f"event id {events.event_id[2]} recorded more than once"):
        ReplayBackend(BackendConfig(replay=ReplayConfig(path=path)))


def test_replay_wall_clock_spends_recorded_cost(parity_labels: tuple[Path, EventBatch]) -> None:
    path, events = parity_labels
    # ~1100 recorded seconds at speedup 1e6: about a millisecond of real waiting.
    cfg = BackendConfig(
        clock="wall", cost=CostConfig(wall_speedup=1e6), replay=ReplayConfig(path=path)
    )
    replay = ReplayBackend(cfg)
    assert isinstance(replay.clock, WallClock)
    result = replay.simulate(events)
    assert replay.clock.spent_s == pytest.approx(result.cost_s.sum())


# ---------------------------------------------------------------------------------------------
# Registry.
def test_builtin_backends_registered() -> None:
    assert {"emulator", "external", "replay"} <= set(registered_backends())


def test_unknown_backend_lists_registered() -> None:
    with pytest.raises(
        UserError, match=r"unknown backend 'geant5' \(registered: emulator, external"
    ):
        make_backend(BackendConfig(name="geant5"))


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A user's own module on sys.path, holding a backend class, a factory and a skim."""
    name = "my_sim_plugin"
    (tmp_path / f"{name}.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            from adaptive_bkg.interfaces import SimResult

            class AllPass:
                def __init__(self, cfg, skims):
                    self.cfg, self._skims = cfg, tuple(skims or ("mine",))
                @property
                def skims(self):
                    return self._skims
                def simulate(self, batch):
                    n = len(batch)
                    return SimResult(batch.event_id, np.ones((n, len(self._skims)), bool),
                                     np.full(n, 2.0))

            def factory(cfg, skims):
                return AllPass(cfg, skims)

            class NotABackend:
                def __init__(self, cfg, skims):
                    pass

            class NoArguments:
                def __init__(self):
                    pass

            from adaptive_bkg.backends.emulator.skims import Skim

            class MySkim(Skim):
                name = "my-skim"
                approximates = "nothing"

                def select(self, ctx):
                    return ctx.variables.n_tracks >= 0

            class NotASkim:
                name = "not-a-skim"

            NOT_CALLABLE = 3
            """
        )
    )
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('needs basf2 environment')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for module in (name, "broken_plugin"):
        sys.modules.pop(module, None)


def test_backend_by_import_path(user_module: str, make_synthetic_events: SyntheticEvents) -> None:
    events = make_synthetic_events(4, seed=1)
    for target in ("AllPass", "factory"):
        backend = make_backend(BackendConfig(name=f"{user_module}:{target}"), ("x", "y"))
        result = backend.simulate(events)
        check_result(result, events, 2)
        assert result.flags.all()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no_such_module_xyz:Thing", "cannot import module no_such_module_xyz"),
        ("broken_plugin:Thing", "RuntimeError: needs basf2 environment"),
        ("my_sim_plugin:Missing", "has no attribute Missing"),
        ("my_sim_plugin:NotABackend", "lacks .skims and .simulate"),
        ("my_sim_plugin:NOT_CALLABLE", "is not a class or factory"),
        ("my_sim_plugin:NoArguments", "cannot be called as my_sim_plugin:NoArguments(cfg, skims)"),
        (":AllPass", "must look like my_module:MyClass"),
    ],
)
def test_backend_import_path_errors(user_module: str, name: str, message: str) -> None:
    with pytest.raises(UserError) as info:
        make_backend(BackendConfig(name=name), ("a",))
    assert message in str(info.value)
    assert name in str(info.value)
    if "import" in message or "attribute" in message:
        assert "registered backends: emulator, external, replay" in str(info.value)


def test_register_backend_by_name(make_synthetic_events: SyntheticEvents) -> None:
    register_backend("parity-test", ParityBackend)
    try:
        backend = make_backend(BackendConfig(name="parity-test"))
        assert backend.skims == ("even", "odd")
        assert "parity-test" in registered_backends()
    finally:
        from adaptive_bkg import backends

        backends._REGISTRY.pop("parity-test")
    with pytest.raises(ValueError, match="contain no ':'"):
        register_backend("a:b", ParityBackend)


def test_make_backend_uses_config_skims_when_none_given() -> None:
    register_backend("parity-test", ParityBackend)
    try:
        backend = make_backend(BackendConfig(name="parity-test", skims=("s1",)))
        assert backend.skims == ("s1",)
        assert make_backend(BackendConfig(name="parity-test", skims=("s1",)), ("s2",)).skims == (
            "s2",
        )
    finally:
        from adaptive_bkg import backends

        backends._REGISTRY.pop("parity-test")


def test_resolve_skim(user_module: str) -> None:
    assert resolve_skim(f"{user_module}:MySkim").name == "my-skim"
    assert resolve_skim("dstar-d0pi").name == "dstar-d0pi"
    with pytest.raises(UserError, match="unknown skim 'no-such-skim'"):
        resolve_skim("no-such-skim")
    with pytest.raises(UserError, match="cannot import module nope_mod"):
        resolve_skim("nope_mod:Skim")
    with pytest.raises(UserError, match=r"not an adaptive_bkg\.backends\.emulator\.skims\.Skim"):
        resolve_skim(f"{user_module}:NotASkim")
    assert load_object(f"{user_module}:AllPass.skims", "x") is not None


def test_user_skim_runs_in_emulator(
    user_module: str, make_synthetic_events: SyntheticEvents
) -> None:
    # A user's skim by import path goes through make_backend into the emulator's flags.
    backend = make_backend(BackendConfig(), (f"{user_module}:MySkim", "tau-generic"))
    assert backend.skims == ("my-skim", "tau-generic")
    assert backend.simulate(make_synthetic_events(5, seed=3)).flags[:, 0].all()


def test_labels_file_roundtrip_schema(parity_labels: tuple[Path, EventBatch]) -> None:
    path, events = parity_labels
    table = pq.read_table(path)
    assert table.schema.field("event_id").type == pa.uint64()
    assert table.column_names == ["event_id", "bkg_type", "pass_even", "pass_odd", "cost_slow_s"]
    np.testing.assert_array_equal(table.column("bkg_type").to_numpy(), events.bkg_type)
