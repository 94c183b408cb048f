"""Credit quality studies: Phase 1 (baselines) and the pivot (learned credit + ablation).

For each seed and estimator (and M, for estimators that use directions): train the
estimator against the frozen student if it learns, take its credit on a held-out
batch and measure gamma, rho and nudge against the oracle, per layer and mean.
"""
import dataclasses
import functools
import os
import time

from absl import logging
import jax
import numpy as np

from creditfield import checkpoints
from creditfield import diagnostics
from creditfield import estimator_training
from creditfield import estimators
from creditfield import outputs
from creditfield import plots
from creditfield import sharding
from creditfield.studies import common

TABLE = ("study", "credit", "M", "conditioning", "targets", "layer", "gamma", "rho", "nudge",
         "estimator_loss", "seconds")


@dataclasses.dataclass(frozen=True)
class Entry:
  """One estimator variant: its name, M, conditioning, targets and vector_field switches."""
  study: str
  name: str
  M: int
  conditioning: str
  targets: str
  variant: tuple[tuple[str, object], ...] = ()  # config.credit.vector_field overrides

  def key(self):
    """What determines the result: entries equal here share one training."""
    return (self.name, self.M, self.conditioning, self.targets, self.variant)


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
    for switch in filter(None, a.variants.split(",")):
      name, _, value = switch.partition("=")
      if name not in c.vector_field:
        raise ValueError(f"config.ablation.variants names {name!r}, which is not a "
                         f"config.credit.vector_field option ({', '.join(c.vector_field)}).")
      value = type(c.vector_field[name])(value) if not isinstance(
          c.vector_field[name], bool) else value == "True"
      out.append(Entry(f"ablation_{name}", "vector_field", a.M, c.conditioning, c.targets,
                       ((name, value),)))
  return out


def _credit_config(config, entry: Entry):
  c = config.credit.copy_and_resolve_references()
  with c.unlocked():
    c.conditioning, c.targets = entry.conditioning, entry.targets
    for name, value in entry.variant:
      c.vector_field[name] = value
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
  for name, value in entry.variant:
    tags[name] = value
  return tags


@functools.lru_cache(maxsize=128)
def _quality_fn(estimator, oracle, spec, num_directions: int, sigma: float, nudge_eps: float):
  """The jitted measurement, one per estimator (so seeds reuse the compiled program)."""
  @jax.jit
  def measure(phi, student_params, x, y, key):
    x, y = sharding.shard_batch(x), sharding.shard_batch(y)
    k_credit, k_diag = jax.random.split(key)
    acts = estimator.activations(student_params, x, y)
    credit = estimator.credit(phi, student_params, acts, k_credit)
    exact = oracle.credit({}, student_params, oracle.activations(student_params, x, y), None)
    return diagnostics.credit_quality(spec, student_params, acts, credit, exact, k_diag,
                                      num_directions, sigma, nudge_eps)
  return measure


def evaluate_credit(estimator, oracle, spec, student_params, x, y, phi, key, dcfg):
  """Per-layer quality of `estimator`'s credit on one batch, as numpy arrays."""
  measure = _quality_fn(estimator, oracle, spec, dcfg.num_directions, dcfg.sigma,
                        dcfg.nudge_eps)
  return jax.device_get(measure(phi, student_params, x, y, key))


def layer_rows(base: dict, quality: dict) -> list[dict]:
  depth = len(quality["gamma"])
  rows = [dict(base, layer=l, **{m: float(quality[m][l]) for m in diagnostics.METRICS})
          for l in range(depth)]
  rows.append(dict(base, layer="mean",
                   **{m: float(np.mean(quality[m])) for m in diagnostics.METRICS}))
  return rows


def _measure(r, config, entry, est, seed, student_params, oracle, spec, x, y):
  """Trains (if learned) and measures one entry; returns (per-layer quality, extra row keys)."""
  key = common.estimator_key(seed, entry.name, entry.M)
  last = {}

  def record(records):
    r.metrics(records)
    last.update(records[-1])

  tic = time.perf_counter()
  phi = estimator_training.train(est, student_params, r.dataset.x_train, r.dataset.y_train,
                                 config.estimator, key, on_metrics=record,
                                 skip_nonfinite=config.skip_nonfinite,
                                 **entry_tags(entry, est.learned, seed))
  jax.block_until_ready(phi)
  seconds = time.perf_counter() - tic
  quality = evaluate_credit(est, oracle, spec, student_params, x, y, phi,
                            jax.random.fold_in(key, 1), config.diagnostics)
  # Training cost (compilation included) and final loss, for learned estimators.
  extras = dict(estimator_loss=last.get("total"), seconds=seconds) if est.learned else {}
  return quality, extras


def run(config, workdir: str) -> dict:
  r = common.start(config, workdir)
  todo = entries(config)
  # Built once, before any work (bad settings fail fast), and every seed reuses them.
  built = {e.key(): estimators.make(e.name, r.spec, _credit_config(config, e), e.M)
           for e in todo}
  student_params, snapshot_eval = common.student(r)
  spec = r.spec.with_guard(False)
  oracle = estimators.oracle(spec)
  rows = []
  for seed in range(config.seed, config.seed + config.num_seeds):
    x, y = common.diagnostics_batch(r, jax.random.fold_in(jax.random.PRNGKey(seed), 10**6))
    measured = {}  # entry.key() -> (quality, extras): ablation points equal to main ones
    for entry in todo:
      if entry.key() not in measured:
        measured[entry.key()] = _measure(r, config, entry, built[entry.key()], seed,
                                         student_params, oracle, spec, x, y)
      quality, extras = measured[entry.key()]
      est_learned = "estimator_loss" in extras
      rows.extend(layer_rows(dict(entry_tags(entry, est_learned, seed), **extras), quality))
      logging.info("%s (%s): mean gamma %.3f rho %.3f nudge %.3f", entry.name, entry.study,
                   rows[-1]["gamma"], rows[-1]["rho"], rows[-1]["nudge"])
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
