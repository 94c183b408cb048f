"""Local training from scratch: credit x rule x seeds, each student trained from random init.

For each credit a training step is one compiled chunk (`local_training`); every
rule and seed reuses it. Every `eval_every` steps the host measures test loss and
accuracy and the credit's Gamma per layer against the oracle on a held-out batch.
The cost of a student update is reported as matmul FLOPs (`flops`, estimator
updates included), as student forward-pass equivalents (those FLOPs over one
forward pass of the batch) and as training milliseconds, so that methods that
spend many perturbations are compared at matched budgets.
"""
import os
import time

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from creditfield import bp_training
from creditfield import checkpoints
from creditfield import diagnostics
from creditfield import estimator_training
from creditfield import estimators
from creditfield import flops
from creditfield import local_training
from creditfield import outputs
from creditfield import plots
from creditfield import rng
from creditfield import rules as rules_lib
from creditfield import student as student_lib
from creditfield import training_loop
from creditfield.studies import common

TABLE = ("credit", "M", "rule", "eta", "test_accuracy", "test_loss", "best_test_accuracy",
         "gamma", "ms_per_update", "forward_equivalents", "gflop_per_update")
GROUP = ("credit", "M", "rule", "eta")
FINAL_METRICS = ("test_accuracy", "test_loss", "best_test_accuracy", "gamma", "ms_per_update",
                 "train_seconds", "forward_equivalents", "gflop_per_update")


def _headline(task: str) -> str:
  return "test_accuracy" if task == "classification" else "test_loss"


def update_cost(step_fn, state, data, spec, params, x) -> dict:
  """Matmul FLOPs of one student update (estimator updates included) and their ratio
  to one forward pass of the batch."""
  step_flops = flops.matmul_flops(step_fn, data, state, jnp.int32(0))
  forward_flops = flops.matmul_flops(lambda p, x: student_lib.forward(spec, p, x)[1], params, x)
  return {"gflop_per_update": step_flops / 1e9,
          "forward_equivalents": step_flops / forward_flops}


def train_one(r, est, init_fn, step_fn, rule: str, eta, seed: int, projections, dx, dy, tags):
  """Trains one student; returns (final row, eval curve records)."""
  cfg, x_train, y_train = r.config.local_train, r.dataset.x_train, r.dataset.y_train
  eval_spec = r.spec.with_guard(False)
  key = rng.stream(seed, "local_train")  # the same student init for every credit
  k_init, k_quality = rng.leaves(key, "init", "quality")
  state = init_fn(k_init, x_train, y_train)
  data = (x_train, y_train, key, jnp.int32(rules_lib.rule_index(rule)),
          jnp.float32(eta or 0.0), projections)
  curve, chunk_seconds = [], []
  clock = {"last": time.perf_counter()}

  def on_chunk(first_step, metrics, state):
    chunk_seconds.append(time.perf_counter() - clock["last"])
    step = first_step + len(metrics["loss"])
    ev = bp_training.evaluate(eval_spec, state.params, r.dataset.x_test, r.dataset.y_test)
    phi = estimator_training.credit_params(state.estimator, r.config.estimator)
    gamma = diagnostics.evaluate_credit(est, state.params, dx, dy, phi,
                                        rng.step_key(k_quality, step),
                                        r.config.diagnostics)["gamma"]
    record = dict(tags, phase="local_eval", step=step, train_loss=float(np.mean(metrics["loss"])),
                  chunk_seconds=chunk_seconds[-1], gamma=float(np.mean(gamma[:-1])),
                  **{f"test_{k}": v for k, v in ev.items()},
                  **{f"gamma_l{l}": float(g) for l, g in enumerate(gamma)},
                  **{k: float(np.mean(v)) for k, v in metrics.items() if k != "loss"})
    curve.append(record)
    clock["last"] = time.perf_counter()

  training_loop.run(step_fn, state, data, start=0, num_steps=cfg.steps,
                    chunk_size=cfg.eval_every, what=f"local {tags['credit']} {rule} seed {seed}",
                    on_chunk=on_chunk)
  # Wall time of training alone: evaluation is excluded, and the first chunk, which
  # also compiles when a credit runs for the first time, counts as a typical chunk.
  typical = float(np.median(chunk_seconds[1:])) if len(chunk_seconds) > 1 else chunk_seconds[0]
  seconds = np.cumsum([min(chunk_seconds[0], typical)] + chunk_seconds[1:])
  for record, s in zip(curve, seconds):
    record["train_seconds"] = float(s)
  r.metrics(curve)
  metric = _headline(r.spec.task)
  best = (max if metric == "test_accuracy" else min)(c[metric] for c in curve)
  final = dict(tags, test_loss=curve[-1]["test_loss"], gamma=curve[-1]["gamma"],
               train_seconds=float(seconds[-1]),
               ms_per_update=1e3 * float(seconds[-1]) / cfg.steps)
  if metric == "test_accuracy":
    final.update(test_accuracy=curve[-1]["test_accuracy"], best_test_accuracy=best)
  return final, curve


def report_markdown(final: list[dict], task: str) -> str:
  value = _headline(task)
  final = [dict(r, rule_eta=common.rule_label(r), credit_M=common.credit_label(r))
           for r in final]
  # FLOPs are the same for every rule of a credit; milliseconds are averaged over rules.
  cost = ("forward_equivalents", "gflop_per_update", "ms_per_update")
  per_credit = [{k: v for k, v in r.items() if k == "credit_M" or k in cost}
                for r in outputs.summarize(final, ("credit_M",), cost)]
  parts = [f"Final {value} (mean ± std over seeds):", "",
           outputs.pivot_markdown(final, "credit_M", "rule_eta", value), "",
           "Gamma (mean over hidden layers 0..L-1) at the end of training:", "",
           outputs.pivot_markdown(final, "credit_M", "rule_eta", "gamma"), "",
           "Cost of one student update (estimator updates included; ms: mean over rules):", "",
           outputs.markdown_table(per_credit, ("credit_M",) + cost)]
  return "\n".join(parts) + "\n"


def _plot_curves(workdir: str, curves: list[dict], rules: tuple, task: str) -> None:
  """One figure per (metric, x axis), a panel per rule, a line per credit."""
  value = _headline(task)
  summary = outputs.summarize(curves, GROUP + ("step",), (value, "gamma", "train_seconds"))
  panels = {rule: [s for s in summary if s["rule"] == rule] for rule in rules}
  for y, x in ((value, "step"), (value, "train_seconds"), ("gamma", "step")):
    plots.line_panels(panels, os.path.join(workdir, f"{y}_vs_{x}.png"), x=x, y=y,
                      label=common.credit_label)


def run(config, workdir: str) -> dict:
  names = estimators.parse_names(config.credit.names)
  cfg = config.local_train
  rule_list = rules_lib.parse_rules(cfg.rules)
  r = common.start(config, workdir)
  spec = r.spec
  projections = rules_lib.projections(rng.stream(config.seed, "local_train", "projections"),
                                      spec)
  dx, dy = common.diagnostics_batch(r, config.seed)
  image_shape = r.dataset.image_shape
  rows, curves = [], []
  for name in names:
    est = estimators.make(name, spec, config.credit)
    step_fn = local_training.make_train_step(est, cfg, config.estimator,
                                             image_shape=image_shape,
                                             skip_nonfinite=config.skip_nonfinite)
    init_fn = local_training.make_init(est, cfg, config.estimator)
    # Shapes suffice to count FLOPs: no state is built for it.
    state_shape = jax.eval_shape(init_fn, jax.random.PRNGKey(0), r.dataset.x_train,
                                 r.dataset.y_train)
    cost = update_cost(step_fn, state_shape, (r.dataset.x_train, r.dataset.y_train,
                                              jax.random.PRNGKey(0), jnp.int32(0),
                                              jnp.float32(0.0), projections),
                       spec, state_shape.params, r.dataset.x_train[:cfg.batch_size])
    for rule in rule_list:
      eta = float(cfg.eta) if rule in rules_lib.USES_ETA else None
      for seed in range(config.seed, config.seed + config.num_seeds):
        tags = dict(credit=name, rule=rule, eta=eta, seed=seed)
        if name in estimators.USES_M:
          tags["M"] = config.credit.M
        final, curve = train_one(r, est, init_fn, step_fn, rule, eta, seed, projections, dx, dy,
                                 tags)
        rows.append(dict(final, **cost))
        curves += curve
        logging.info("local training %s: %s", tags, rows[-1])
    # Results so far, after every credit: a long run that is stopped keeps its table.
    summary, meta = _write(r, rows)
  _plot_curves(workdir, curves, rule_list, spec.task)
  print(f"Local training from scratch, {cfg.steps} steps ({r.dataset.name}):")
  print(outputs.text_table(summary, TABLE))
  return {"rows": summary + rows, "meta": meta}


def _write(r, rows: list[dict]) -> tuple[list[dict], dict]:
  summary = outputs.summarize(rows, GROUP, FINAL_METRICS)
  meta = outputs.run_meta(r.dataset, experiment="local_train", wall_seconds=r.stopwatch.seconds(),
                          student=checkpoints.spec_to_json(r.spec),
                          steps=r.config.local_train.steps,
                          flops="matmul FLOPs of one student update, counted from its jaxpr",
                          train_seconds="training chunks only; evaluation and compilation "
                                        "excluded")
  outputs.write_results(r.workdir, summary + rows, meta, columns=TABLE)
  with open(os.path.join(r.workdir, "tables.md"), "w") as f:
    f.write(report_markdown(summary, r.spec.task))
  return summary, meta
