"""The pivot and Phase 6C studies end to end at their `runlocal` size."""
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from creditfield import config_defaults
from creditfield import estimators
from creditfield import rules
from creditfield.infra import run as run_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(name, workdir, **overrides):
  config = config_defaults.load(os.path.join(ROOT, "configs", f"{name}.py"), "synthetic,runlocal")
  for key, value in overrides.items():
    *path, leaf = key.split(".")
    node = config
    for part in path:
      node = node[part]
    node[leaf] = value
  run_lib.run_experiment(config, str(workdir))
  with open(os.path.join(workdir, "results.json")) as f:
    return json.load(f)


def test_pivot_runlocal_has_learned_estimators_with_quality_metrics(tmp_path):
  rows = _run("pivot", tmp_path)["rows"]
  means = [r for r in rows if r["layer"] == "mean" and r["seed"] == "all"]
  found = {(r["credit"], r.get("M")) for r in means if r["study"] == "main"}
  assert {("scalar_bridge", None), ("vector_field", 4), ("identity", None)} <= found
  for r in means:
    assert {"gamma", "gamma_weighted", "rho", "nudge"} <= set(r)
  assert {r["study"] for r in means} >= {"ablation_M", "ablation_combined"}
  # The headline mean is over the hidden layers 0..L-1; layer L is reported apart.
  depth = 4
  vf = [r for r in rows if r["seed"] == 0 and r["study"] == "main"
        and r["credit"] == "vector_field"]
  by_layer = {r["layer"]: r for r in vf}
  assert set(by_layer) == set(range(depth)) | {"mean", "terminal"}
  assert abs(by_layer["mean"]["gamma"] -
             sum(by_layer[l]["gamma"] for l in range(depth)) / depth) < 1e-6
  assert by_layer["terminal"]["gamma"] > 0.999  # delta_L itself, exact at layer L
  assert by_layer["mean"]["steps"] == 100  # estimator steps of the runlocal config


def test_phase6c_runlocal_covers_its_credits_and_every_rule(phase6c_runlocal):
  tmp_path, result = phase6c_runlocal
  final = [r for r in result["rows"] if r["seed"] == "all" and r.get("kind") is None
           and r["k"] == 3]
  names = estimators.parse_names(
      config_defaults.load(os.path.join(ROOT, "configs", "phase6c.py"),
                           "synthetic,runlocal").credit.names)
  assert {(r["credit"], r["rule"]) for r in final} == {
      (c, rule) for c in names for rule in rules.RULES}
  # The zero credit is the control: only the head learns, so no rule differs from another.
  zero = {r["rule"]: r["delta_loss_update"] for r in final
          if r["credit"] == "zero" and r["lr"] == min(r["lr"] for r in final)}
  assert max(zero.values()) - min(zero.values()) < 1e-6, zero
  for r in final:
    assert "delta_loss_update" in r and "delta_loss_heldout" in r
  smallest = min(r["lr"] for r in final)
  oracle_ip = [r for r in final if r["credit"] == "oracle" and r["rule"] == "inner_product"
               and r["lr"] == smallest]
  assert oracle_ip[0]["delta_loss_update"] < 0
  assert abs(oracle_ip[0]["gamma"] - 1) < 1e-5
  # A rerun in the same workdir restores the trained estimators instead of retraining.
  assert os.path.isdir(tmp_path / "estimators" / "vector_field_M4_seed0")
  again = _run("phase6c", tmp_path)
  assert [r for r in again["rows"] if r["seed"] == "all"] == [
      r for r in result["rows"] if r["seed"] == "all"]


def test_phase6_compiles_each_program_once_in_the_background_and_times_its_stages(
    tmp_path, compile_threads, backend_compiles):
  """Every kind of credit (free, exact, the dial, learned): the parameters' shapes are known
  before training, so the programs compile in the background and none is compiled again.
  One compile thread (2 cores): one switch, the estimators compiling their own programs beside
  it; three threads: three switches and the estimators' programs, the sweeps first. The rows
  are the same."""
  rows = {}
  for workers in (1, 3):
    compile_threads.use(workers)
    with backend_compiles() as compiles:
      rows[workers] = _run("phase6a", tmp_path / str(workers), **{
          "credit.names": "oracle,dfa,vector_field,zero,oracle_dial", "phase6.k": 2,
          "phase6.compile_groups": 0, "compile_cache.dir": "none"})["rows"]
    switches = workers  # 5 credits in one group per compile thread (compile_groups 0)
    assert compiles["jit(sweep_seeds)"] == switches, compiles
    assert compiles["jit(run)"] == switches, compiles
    assert compiles["jit(measure)"] == switches + 1, compiles  # + vector_field's monitor
    assert compiles["jit(chunk)"] == 2, compiles  # the snapshot's, and vector_field's training
  assert rows[1] == rows[3]
  stats = json.loads((tmp_path / "3" / "run_stats.json").read_text())
  assert list(stats["stage_seconds"]) == ["data", "snapshot", "estimators", "compile", "quality",
                                          "sweeps", "update_diagnostics", "outputs"]
  assert sum(stats["stage_seconds"].values()) < stats["wall_s"]


def test_phase6c_runlocal_dial_spans_gamma_and_correlations_are_rows(phase6c_runlocal):
  """The dial's Gamma on the snapshot is its gamma (exact cosine by construction), and the
  study reports Spearman's rho of delta loss with Gamma over the dial and over the credits."""
  tmp_path, result = phase6c_runlocal
  rows = result["rows"]
  dial = {r["dial_gamma"]: r["gamma"] for r in rows
          if r.get("credit") == "oracle_dial" and r["seed"] == 0}
  assert len(dial) >= 3, dial
  for gamma, measured in dial.items():
    assert abs(measured - gamma) < 1e-4, dial
  correlations = [r for r in rows if r.get("kind") == "correlation"]
  assert {r["over"] for r in correlations} == {"dial", "credits"}
  for r in correlations:
    assert -1 <= r["spearman"] <= 1 and r["ci_low"] <= r["spearman"] + 1e-12
  # On the update batches at the smallest lr the first-order change is linear in gamma with a
  # negative slope (the dial's norm is ||g||): exact SGD's ranking, rho = -1.
  smallest = min(r["lr"] for r in correlations)
  ip = [r for r in correlations if r["over"] == "dial" and r["rule"] == "inner_product"
        and r["lr"] == smallest and r["delta"] == "delta_loss_update"]
  assert ip and ip[0]["spearman"] == -1.0, ip
  for name in ("delta_loss_vs_gamma_inner_product.png", "delta_loss_vs_gamma_cosine.png"):
    assert (tmp_path / name).stat().st_size > 0
  # Every row carries the update-level diagnostics of its credit x rule at the snapshot: the
  # oracle under inner_product is backprop's update exactly; zero credit makes none.
  at = lambda credit, rule: next(r for r in rows if r.get("credit") == credit
                                 and r.get("rule") == rule and r["seed"] == 0)
  assert abs(at("oracle", "inner_product")["update_alignment"] - 1) < 1e-4
  assert at("zero", "inner_product")["update_alignment"] == 0.0
  assert at("vector_field", "cosine")["stream_norm"] > 0


def test_phase6_refuses_a_snapshot_of_other_data(tmp_path, phase6c_runlocal):
  """Same architecture, other data (the teacher's alpha): the snapshot's data fingerprint
  differs from the run's, and the run stops before any number is made."""
  from creditfield.infra import checkpoints  # pylint: disable=g-import-not-at-top
  from creditfield.studies import common  # pylint: disable=g-import-not-at-top
  config = config_defaults.load(os.path.join(ROOT, "configs", "phase6c.py"), "synthetic,runlocal")
  config.snapshot.path = str(phase6c_runlocal[0])
  config.data.synthetic.alpha = 3.0
  r = common.start(config, str(tmp_path))
  with pytest.raises(checkpoints.SnapshotError, match="allow_other_data"):
    common.student(r)
  config.snapshot.allow_other_data = True
  _, snapshot_eval = common.student(common.start(config, str(tmp_path / "transfer")))
  assert snapshot_eval["data_fingerprint"] != r.dataset.fingerprint


def test_same_config_and_seed_reproduce_bit_identical_results(tmp_path, phase6c_runlocal):
  again = _run("phase6c", tmp_path)
  assert again["rows"] == phase6c_runlocal[1]["rows"]


def test_phase6_over_snapshots_pairs_them_and_gives_intervals_over_snapshots(
    tmp_path, phase6c_runlocal):
  """Two snapshots trained from their own streams: snapshot 0 is the single-snapshot run's
  student (its per-seed rows equal the fixture's bit for bit), snapshot 1 is another student,
  and the `snapshot: all` rows are the mean over the per-snapshot means with a t-interval
  around it and a sign count."""
  result = _run("phase6c", tmp_path, **{"snapshot.seeds": (0, 1),
                                        "credit.names": "oracle,identity,zero,oracle_dial",
                                        "phase6.rules": "inner_product"})
  rows = result["rows"]
  assert sorted(os.listdir(tmp_path / "snapshots")) == ["seed0", "seed1"]
  key = lambda r: (r["credit"], r.get("dial_gamma"), r["lr"], r["k"], r["seed"])
  single = {key(r): r for r in phase6c_runlocal[1]["rows"]
            if r.get("kind") is None and r["seed"] != "all" and r["rule"] == "inner_product"}
  per_seed = [r for r in rows if r.get("kind") is None and r["seed"] != "all"]
  first = [r for r in per_seed if r["snapshot"] == 0]
  assert first and all(r == single[key(r)] for r in first)
  second = {key(r): r for r in per_seed if r["snapshot"] == 1}
  assert any(second[key(r)]["delta_loss_update"] != r["delta_loss_update"] for r in first
             if r["credit"] == "oracle")
  per_snapshot = {(r["snapshot"],) + key(r)[:4]: r for r in rows
                  if r.get("kind") is None and r["seed"] == "all" and r["snapshot"] != "all"}
  over = [r for r in rows if r.get("kind") is None and r.get("snapshot") == "all"]
  assert over and all(r["num_snapshots"] == 2 for r in over)
  for r in over:
    means = [per_snapshot[(s,) + key(r)[:4]]["delta_loss_heldout"] for s in (0, 1)]
    assert r["delta_loss_heldout"] == pytest.approx(np.mean(means), rel=1e-6)
    assert r["delta_loss_heldout_ci_low"] <= r["delta_loss_heldout"] <= (
        r["delta_loss_heldout_ci_high"])
    assert r["delta_loss_heldout_sign_holds"] == sum(
        np.sign(m) == np.sign(np.mean(means)) for m in means)
  correlations = [r for r in rows if r.get("kind") == "correlation" and r["snapshot"] == "all"]
  assert correlations and all(r["num_snapshots"] == 2 for r in correlations)
  assert "Claims across 2 snapshots" in (tmp_path / "tables.md").read_text()
  # The same study as one process per snapshot, merged: the same rows over snapshots.
  one = tmp_path / "snapshot1_alone"
  _run("phase6c", one, **{"snapshot.seeds": (1,), "credit.names": "oracle,identity,zero",
                          "phase6.rules": "inner_product"})
  out = subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "merge_results.py"),
                        f"--out={tmp_path / 'merged'}", str(phase6c_runlocal[0]), str(one)],
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr
  with open(tmp_path / "merged" / "results.json") as f:
    merged = {key(r)[:4]: r for r in json.load(f)["rows"]
              if r.get("snapshot") == "all" and r.get("kind") is None
              and r["rule"] == "inner_product" and r["credit"] != "oracle_dial"}
  expected = [r for r in over if r["credit"] != "oracle_dial"]
  assert expected and all(merged[key(r)[:4]] == r for r in expected)


def test_pivot_compiles_its_entries_in_the_background_once_each(tmp_path, compile_threads,
                                                                backend_compiles):
  """With several compile threads every entry's training and quality programs compile in the
  background while earlier entries run: the same programs as compiling each as its entry comes
  (none twice, also for dfa's fixed feedback parameters), and the same Gamma."""
  counts, results = {}, {}
  for workers in (1, 3):
    compile_threads.use(workers)
    with backend_compiles() as compiles:
      rows = _run("pivot", tmp_path / str(workers), **{
          "compile_cache.dir": "none", "credit.names": "identity,dfa,scalar_bridge,vector_field",
          "ablation.enabled": False})["rows"]
    counts[workers] = {k: compiles[k] for k in ("jit(chunk)", "jit(measure)")}
    results[workers] = [{k: v for k, v in r.items() if not k.startswith("seconds")}
                        for r in rows]
  # The snapshot's training and the two learned estimators'; their monitors, identity's and dfa's.
  assert counts[3] == counts[1] == {"jit(chunk)": 3, "jit(measure)": 4}, counts
  # Only with 3 threads: a chunk and a quality program per learned estimator, a quality program
  # per one that does not learn.
  assert compile_threads.submitted == [2 * 2 + 2], compile_threads.submitted
  assert results[3] == results[1]
