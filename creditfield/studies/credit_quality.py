"""Credit quality studies: Phase 1 (baselines) and the pivot (learned credit + ablation).

For each seed and estimator (and M, for estimators that use directions): train the
estimator against the frozen student if it learns, take its credit on a held-out
batch and measure gamma, rho and nudge against the oracle, per layer and mean.
"""
import dataclasses
import os
import time

from absl import logging
import jax
import numpy as np

from creditfield import checkpoints
from creditfield import datasets
from creditfield import diagnostics
from creditfield import estimator_training
from creditfield import estimators
from creditfield import outputs
from creditfield import plots
from creditfield.studies import common

TABLE = ("study", "credit", "M", "conditioning", "targets", "layer", "gamma", "rho", "nudge",
         "estimator_loss", "seconds")


@dataclasses.dataclass(frozen=True)
class Entry:
  """One estimator variant: its name, M, and any config.credit overrides."""
  study: str
  name: str
  M: int
  conditioning: str
  targets: str


def entries(config) -> list[Entry]:
  c = config.credit
  names = estimators.parse_names(c.names)
  m_values = tuple(c.M_values) if c.M_values else (c.M,)
  out = []
  for name in names:
    for m in (m_values if name in estimators.USES_M else (c.M,)):
      out.append(Entry("main", name, m, c.conditioning, c.targets))
  a = config.get("ablation")
  if a is not None and a.enabled:
    for m in a.M_values:
      out.append(Entry("ablation_M", "vector_field", m, c.conditioning, c.targets))
    for targets in a.targets.split(","):
      out.append(Entry("ablation_targets", "vector_field", a.M, c.conditioning, targets))
    for cond in a.conditioning.split(","):
      out.append(Entry("ablation_conditioning", "vector_field", a.M, cond, c.targets))
  return out


def _credit_config(config, entry: Entry):
  c = config.credit.copy_and_resolve_references()
  with c.unlocked():
    c.conditioning, c.targets = entry.conditioning, entry.targets
  return c


def entry_tags(entry: Entry, learned: bool, seed: int) -> dict:
  """Row keys for an entry: M, conditioning and targets only where they apply."""
  tags = dict(study=entry.study, credit=entry.name, seed=seed)
  if entry.name in estimators.USES_M:
    tags["M"] = entry.M
  if learned:
    tags["conditioning"] = entry.conditioning
  if entry.name == "vector_field":
    tags["targets"] = entry.targets
  return tags


def evaluate_credit(estimator, oracle, spec, student_params, x, y, phi, key, dcfg):
  """Per-layer quality of `estimator`'s credit on one batch, as numpy arrays."""
  @jax.jit
  def measure(phi, student_params, x, y, key):
    k_credit, k_diag = jax.random.split(key)
    acts = estimator.activations(student_params, x, y)
    credit = estimator.credit(phi, student_params, acts, k_credit)
    exact = oracle.credit({}, student_params, oracle.activations(student_params, x, y), None)
    return diagnostics.credit_quality(
        spec, student_params, acts, credit, exact, k_diag, dcfg.num_directions, dcfg.sigma,
        dcfg.nudge_eps)
  return jax.device_get(measure(phi, student_params, x, y, key))


def layer_rows(base: dict, quality: dict) -> list[dict]:
  depth = len(quality["gamma"])
  rows = [dict(base, layer=l, **{m: float(quality[m][l]) for m in diagnostics.METRICS})
          for l in range(depth)]
  rows.append(dict(base, layer="mean",
                   **{m: float(np.mean(quality[m])) for m in diagnostics.METRICS}))
  return rows


def run(config, workdir: str) -> dict:
  r = common.start(config, workdir)
  todo = entries(config)  # validates names before any work
  student_params, snapshot_eval = common.student(r)
  spec = r.spec.with_guard(False)
  oracle = estimators.oracle(spec)
  rows = []
  for seed in range(config.seed, config.seed + config.num_seeds):
    x, y = datasets.sample_batch(jax.random.fold_in(jax.random.PRNGKey(seed), 10**6),
                                 r.dataset.x_test, r.dataset.y_test,
                                 min(config.diagnostics.batch_size, r.dataset.x_test.shape[0]))
    for entry in todo:
      key = common.estimator_key(seed, entry.name, entry.M)
      est = estimators.make(entry.name, r.spec, _credit_config(config, entry), entry.M)
      tags = entry_tags(entry, est.learned, seed)
      last = {}

      def record(records, tags=tags, last=last):
        r.metrics(records)
        last.update(records[-1])

      tic = time.perf_counter()
      phi = estimator_training.train(est, student_params, r.dataset.x_train,
                                     r.dataset.y_train, config.estimator, key,
                                     on_metrics=record, **tags)
      phi = jax.block_until_ready(phi)
      seconds = time.perf_counter() - tic
      quality = evaluate_credit(est, oracle, spec, student_params, x, y, phi,
                                jax.random.fold_in(key, 1), config.diagnostics)
      base = dict(tags)
      if est.learned:  # training cost, compilation included
        base.update(estimator_loss=last.get("total"), seconds=seconds)
      rows.extend(layer_rows(base, quality))
      logging.info("%s: mean gamma %.3f rho %.3f nudge %.3f (%.1fs)",
                   common.credit_label(tags), rows[-1]["gamma"], rows[-1]["rho"],
                   rows[-1]["nudge"], seconds)
  group = ("study", "credit", "M", "conditioning", "targets", "layer")
  summary = outputs.summarize(rows, group, diagnostics.METRICS + ("estimator_loss", "seconds"))
  meta = outputs.run_meta(r.dataset, experiment=config.experiment,
                          wall_seconds=r.stopwatch.seconds(), snapshot_eval=snapshot_eval,
                          student=checkpoints.spec_to_json(spec))
  outputs.write_results(workdir, summary + rows, meta, columns=TABLE)
  means = [s for s in summary if s["layer"] == "mean"]
  print(outputs.text_table(means, TABLE))
  plots.lines([s for s in summary if s["layer"] != "mean" and s["study"] == "main"],
              os.path.join(workdir, "gamma_per_layer.png"), x="layer", y="gamma",
              label=common.credit_label, title="Gamma per layer (mean ± std over seeds)")
  learned = [rec for rec in r.metrics.read() if "total" in rec]
  if learned:
    plots.training_curves(learned, os.path.join(workdir, "estimator_training.png"),
                          keys=sorted({k for rec in learned for k in rec} &
                                      {"total", "terminal", "perturbation", "bridge", "value",
                                       "gradient", "smoothness"}),
                          label=lambda rec: f"{common.credit_label(rec)} {rec['study']} "
                                            f"{rec['conditioning']} {rec.get('targets', '')} s{rec['seed']}")
  return {"rows": summary + rows, "meta": meta}
