"""Local training from scratch: the BP reference, online estimators, the study's outputs."""
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from creditfield import config_defaults
from creditfield import dataset as dataset_lib
from creditfield import datasets
from creditfield import diagnostics
from creditfield import estimator_training
from creditfield import estimators
from creditfield import from_scratch
from creditfield import optimizers
from creditfield import rng
from creditfield import rules as rules_lib
from creditfield import sampling
from creditfield import seeds as seeds_lib
from creditfield import student as student_lib
from creditfield.infra import run as run_lib
from creditfield.infra import validation
from creditfield.studies import common
from creditfield.studies import local_train as local_train_study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(**local_train):
  c = config_defaults.load(os.path.join(ROOT, "configs", "local_train.py"), "synthetic,runlocal")
  c.local_train.update(local_train)
  return c


def _setup(config, name):
  dataset = datasets.load(config, 0)
  spec = dataset_lib.student_spec(config, dataset)
  est = estimators.make(name, spec, config.credit)
  cfg = config.local_train
  init = from_scratch.make_init(est, cfg, config.estimator)(
      jax.random.PRNGKey(0), dataset.x_train, dataset.y_train)
  step = from_scratch.make_train_step(est, cfg, config.estimator)
  return dataset, spec, est, init, step


def test_oracle_with_inner_product_is_one_step_of_backprop():
  config = _config()
  dataset, spec, _, init, step = _setup(config, "oracle")
  key = jax.random.PRNGKey(5)
  projections = rules_lib.projections(key, spec)
  data = from_scratch.StepData(dataset.x_train, dataset.y_train, key,
                               jnp.int32(rules_lib.rule_index("inner_product")), jnp.float32(0.0),
                               projections)
  state, _ = step(data, init, jnp.int32(0))
  # The same batch and the same AdamW, with gradients of the mean loss by backprop.
  k_batch = rng.leaves(rng.step_key(key, 0), "batch")[0]
  x, y = sampling.sample_batch(k_batch, dataset.x_train, dataset.y_train,
                               config.local_train.batch_size)
  grads = jax.grad(student_lib.mean_loss, argnums=1)(spec, init.params, x, y)
  optimizer = optimizers.adamw(config.local_train)
  updates, _ = optimizer.update(grads, init.opt_state, init.params)
  expected = optax.apply_updates(init.params, updates)
  for got, want in zip(jax.tree.leaves(state.params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_online_estimator_takes_its_steps_on_separate_batches_under_the_guard():
  config = _config(estimator_steps=2, estimator_batch="separate")
  dataset, spec, est, init, step = _setup(config, "vector_field")
  assert est.spec.guarded
  key = jax.random.PRNGKey(1)
  data = from_scratch.StepData(dataset.x_train, dataset.y_train, key,
                               jnp.int32(rules_lib.rule_index("cosine")), jnp.float32(0.0),
                               rules_lib.projections(key, spec))
  state = init
  for i in range(3):
    state, metrics = step(data, state, jnp.int32(i))
  assert int(state.estimator.step) == 6  # 2 estimator steps per student step
  assert np.isfinite(float(metrics["estimator_total"]))
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), state.estimator.params,
                       init.estimator.params)
  assert max(jax.tree.leaves(moved)) > 0  # the credit net learns online


def test_local_train_config_errors_name_the_key():
  with pytest.raises(validation.ConfigError, match="eval_every"):
    validation.validate(_config(eval_every=7))
  with pytest.raises(validation.ConfigError, match="local_train.estimator_batch"):
    validation.validate(_config(estimator_batch="other"))
  with pytest.raises(ValueError, match="Unknown local rule"):
    validation.validate(_config(rules="inner_product,hebbian"))
  with pytest.raises(validation.ConfigError, match="local_train.vmap_rules"):
    validation.validate(_config(vmap_rules=None))  # ConfigDict lets None through


def test_runlocal_study_has_every_credit_and_rule_and_backprop_learns(tmp_path):
  config = _config(rules="inner_product,local_ce")  # two rules keep the test short
  run_lib.run_experiment(config, str(tmp_path))
  with open(tmp_path / "results.json") as f:
    rows = [r for r in json.load(f)["rows"] if r["seed"] == "all" and "kind" not in r]
  credits = estimators.parse_names(config.credit.names)
  rules = rules_lib.parse_rules(config.local_train.rules)
  assert {(r["credit"], r["rule"]) for r in rows} == {(c, u) for c in credits for u in rules}
  by = {(r["credit"], r["rule"]): r for r in rows}
  assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in rows)
  # 40 steps of backprop beat chance (10 classes) by far; its credit is exact.
  assert by[("oracle", "inner_product")]["test_accuracy"] > 0.25
  assert by[("oracle", "inner_product")]["gamma"] == pytest.approx(1.0, abs=1e-5)
  # Matched budgets: perturbation-based credit costs more forward passes than identity.
  assert (by[("vector_field", "inner_product")]["forward_equivalents"] >
          by[("identity", "inner_product")]["forward_equivalents"])
  records = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
  evals = [r for r in records if r.get("phase") == "local_eval"]
  assert {"gamma_l0", "gamma_l4", "train_seconds", "test_accuracy"} <= set(evals[0])
  # The update-level diagnostics, per layer, over training and in the final rows.
  diagnostics_keys = {"update_alignment", "update_alignment_l0", "update_alignment_l4",
                      "norm_ratio_l2", "norm_ratio_p25_l2", "stream_norm_l4",
                      "radial_fraction_l1", "update_alignment_b2"}
  assert diagnostics_keys <= set(evals[0])
  finals = [r for r in json.load(open(tmp_path / "results.json"))["rows"] if r["seed"] == 0]
  assert all(diagnostics_keys <= set(r) for r in finals)
  assert by[("oracle", "inner_product")]["update_alignment"] == pytest.approx(1.0, abs=1e-4)
  assert by[("zero", "inner_product")]["update_alignment"] == 0.0
  assert all(r["radial"] == "keep" and r["size"] == "own" for r in rows)
  for name in ("test_accuracy_vs_step.png", "test_accuracy_vs_train_seconds.png",
               "gamma_vs_step.png", "update_alignment_vs_step.png", "stream_norm_vs_step.png",
               "tables.md"):
    assert (tmp_path / name).stat().st_size > 0


def test_students_group_by_what_is_vmapped():
  groups = lambda vmap_rules, vmap_seeds: local_train_study.student_groups(
      ("inner_product", "cosine"), 2, vmap_rules, vmap_seeds)
  assert groups(True, True) == [[("inner_product", 0), ("inner_product", 1), ("cosine", 0),
                                 ("cosine", 1)]]
  assert groups(False, True) == [[("inner_product", 0), ("inner_product", 1)],
                                 [("cosine", 0), ("cosine", 1)]]
  assert groups(True, False) == [[("inner_product", 0), ("cosine", 0)],
                                 [("inner_product", 1), ("cosine", 1)]]
  assert groups(False, False) == [[("inner_product", 0)], [("inner_product", 1)],
                                  [("cosine", 0)], [("cosine", 1)]]


def test_every_rule_and_seed_in_one_program_gives_the_rows_of_one_at_a_time(tmp_path):
  """Rules and seeds vmapped together (the default: the batched rule index selects each
  student's rule loss) train the same students as one program per rule and seed: each sees
  its seed's batches and its own rule, so the rows agree to float rounding (the vmapped
  matmuls' batch shapes differ); the rules differ from each other."""
  rows = {}
  for together in (True, False):
    config = _config(rules="inner_product,local_ce,distill", vmap_rules=together)
    config.update(dict(num_seeds=2, vmap_seeds=together))
    config.credit.names = "vector_field"
    run_lib.run_experiment(config, str(tmp_path / str(together)))
    with open(tmp_path / str(together) / "results.json") as f:
      rows[together] = {(r["rule"], r["seed"]): r for r in json.load(f)["rows"]
                        if isinstance(r.get("seed"), int)}
  assert set(rows[True]) == set(rows[False]) == {
      (rule, seed) for rule in ("inner_product", "local_ce", "distill") for seed in (0, 1)}
  for key, row in rows[True].items():
    for metric in ("test_loss", "gamma", "update_alignment", "stream_norm"):
      assert row[metric] == pytest.approx(rows[False][key][metric], rel=1e-4, abs=1e-5), (
          key, metric)
  losses = {rule: rows[True][(rule, 0)]["test_loss"] for rule in ("inner_product", "distill")}
  assert abs(losses["inner_product"] - losses["distill"]) > 1e-3, losses
  seeds = [rows[True][("inner_product", seed)]["test_loss"] for seed in (0, 1)]
  assert abs(seeds[0] - seeds[1]) > 1e-4, seeds


def test_credits_compile_in_the_background_once_each(tmp_path, compile_threads,
                                                     backend_compiles):
  """With several compile threads every credit's chunk and evaluation program compile in the
  background while earlier credits train: each once (lowered for the states' shapes as the
  study places them, so the training finds them compiled), the rows those of compiling each
  credit's programs when it starts."""
  counts, rows = {}, {}
  for workers in (1, 3):
    compile_threads.use(workers)
    config = _config(rules="inner_product,cosine")
    config.update(dict(num_seeds=2))
    config.credit.names = "identity,vector_field"
    config.compile_cache.dir = "none"
    with backend_compiles() as compiles:
      run_lib.run_experiment(config, str(tmp_path / str(workers)))
    counts[workers] = {k: compiles[k] for k in ("jit(chunk)", "jit(run)")}
    with open(tmp_path / str(workers) / "results.json") as f:
      rows[workers] = [{k: v for k, v in r.items() if "seconds" not in k and "ms_" not in k}
                       for r in json.load(f)["rows"]]
  # three threads: both credits' chunk and evaluation programs
  assert compile_threads.submitted == [4]
  assert counts[3] == counts[1] == {"jit(chunk)": 2, "jit(run)": 2}, counts
  assert rows[3] == rows[1]


def test_a_study_split_by_credit_merges_into_the_rows_of_its_parts(tmp_path):
  """Credits train independently, so parts of a study run as separate processes (to share a
  GPU, say) merge into one workdir whose summary rows are the parts' own; a part merged into an
  earlier merge gives the same rows, and the meta names every part."""
  parts = {"a": "oracle,zero", "b": "identity"}
  summaries = {}
  for part, names in parts.items():
    config = _config(rules="inner_product")
    config.credit.names = names
    # Parts running at once keep their TFDS copies apart: no part of the data's identity.
    config.data.tfds_data_dir = str(tmp_path / f"tfds_{part}")
    run_lib.run_experiment(config, str(tmp_path / part))
    with open(tmp_path / part / "results.json") as f:
      summaries.update({(r["credit"], r["rule"]): r for r in json.load(f)["rows"]
                        if r["seed"] == "all" and "kind" not in r})
  merge = lambda out, *inputs: subprocess.run(
      [sys.executable, os.path.join(ROOT, "experiments", "merge_results.py"), f"--out={out}",
       *map(str, inputs)], capture_output=True, text=True, timeout=300)
  # Part a merged first, then b added to that earlier merge: as if both were merged at once.
  out = merge(tmp_path / "merged_a", tmp_path / "a")
  assert out.returncode == 0, out.stderr
  out = merge(tmp_path / "merged", tmp_path / "merged_a", tmp_path / "b")
  assert out.returncode == 0, out.stderr
  with open(tmp_path / "merged" / "results.json") as f:
    merged_results = json.load(f)
  merged = merged_results["rows"]
  assert merged_results["meta"]["merged_from"] == [str(tmp_path / p) for p in ("a", "b")]
  assert [c["credit"]["names"] for c in merged_results["meta"]["merged_configs"]] == [
      parts["a"], parts["b"]]
  merged_summary = {(r["credit"], r["rule"]): r for r in merged
                    if r["seed"] == "all" and "kind" not in r}
  assert set(merged_summary) == set(summaries) == {
      ("oracle", "inner_product"), ("zero", "inner_product"), ("identity", "inner_product")}
  for key, row in summaries.items():
    assert merged_summary[key]["test_accuracy"] == pytest.approx(row["test_accuracy"], abs=1e-12)
    assert merged_summary[key]["num_seeds"] == row["num_seeds"] == config.num_seeds
  assert len([r for r in merged if r["seed"] != "all"]) == 3 * config.num_seeds
  for name in ("tables.md", "test_accuracy_vs_step.png", "metrics.jsonl"):
    assert (tmp_path / "merged" / name).stat().st_size > 0


def test_estimator_warm_up_starts_the_field_aligned_with_the_initial_student(tmp_path):
  """`estimator_warmup_steps` trains the field on each seed's initial student before the
  student moves: local training then starts from a field with high Gamma on that student,
  instead of from its zero-initialised output (Gamma 0); the student itself is untouched."""
  states, gammas = {}, {}
  for steps in (0, 300):
    config = _config(estimator_warmup_steps=steps)
    r = common.start(config, str(tmp_path / str(steps)))
    est = estimators.make("vector_field", r.spec, config.credit)
    init_fn = from_scratch.make_init(est, config.local_train, config.estimator)
    seeds = seeds_lib.seed_list(config)
    state = seeds_lib.pick(local_train_study.initial_state(r, est, init_fn, seeds), 0)
    dx, dy = common.diagnostics_batch(r, config.seed)
    phi = estimator_training.credit_params(state.estimator, config.estimator)
    gamma = diagnostics.evaluate_credit(est, state.params, dx, dy, phi, jax.random.PRNGKey(1),
                                        config.diagnostics)["gamma"]
    states[steps], gammas[steps] = state, float(np.mean(gamma[:-1]))  # hidden layers
  assert abs(gammas[0]) < 0.05
  assert gammas[300] > 0.5, gammas
  for a, b in zip(jax.tree.leaves(states[0].params), jax.tree.leaves(states[300].params)):
    np.testing.assert_array_equal(a, b)
