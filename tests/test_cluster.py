"""The pipeline on a 2-node Ray cluster (ray.cluster_utils.Cluster on this machine).

It needs its own Ray instance, so it runs in a separate process (the session fixture's Ray
keeps running in this one). The head has 1 CPU and the worker node 2: the actors ask for 2
CPUs in all (generators 2×0.25, filter 0.5, simulators 2×0.25, learner 0.5), so the run can
only be scheduled across both nodes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import os, sys, json
from pathlib import Path
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
import ray
from ray.cluster_utils import Cluster
import pipeline_fakes
from test_replay import fake_plan

out = Path(sys.argv[1])
mib = 1024 * 1024
cluster = Cluster(
    initialize_head=True,
    head_node_args={"num_cpus": 1, "object_store_memory": 96 * mib, "include_dashboard": False},
)
cluster.add_node(num_cpus=2, object_store_memory=96 * mib)
try:
    ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(pipeline_fakes)
    from adaptive_bkg.pipeline.orchestrate import run_pipeline

    nodes = [n for n in ray.nodes() if n["Alive"]]
    plan = fake_plan(out, "run.events=4000", "ray.generators=2", "ray.simulators=2")
    result = run_pipeline(plan, show_live=False)
    print(json.dumps({"nodes": len(nodes), "n_generated": result.summary.n_generated}))
finally:
    ray.shutdown()
    cluster.shutdown()
"""


def test_pipeline_on_two_node_cluster(tmp_path: Path) -> None:
    paths = [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]  # keep a checkout's
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, paths)),
        "RAY_AUTH_MODE": "disabled",
    }
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report == {"nodes": 2, "n_generated": 4000}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_generated"] == 4000
    assert summary["run"]["n_duplicates"] == 0
    assert (out / "records").is_dir()
