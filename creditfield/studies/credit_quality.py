"""Credit quality studies: Phase 1 (baselines) and the pivot (learned credit + ablation).

For each seed and estimator (and M, for estimators that use directions): train the
estimator against the frozen student if it learns (logging 1 - R^2 of its targets and
Gamma on a training and a held-out batch as it goes), take its credit on a held-out
batch and measure gamma, gamma_weighted, rho and nudge against the oracle, per layer,
as the mean over hidden layers and at the terminal layer. Each entry is a resumable unit
(`entries/<name>_M<M>_<hash>/`): its training saves its state as it goes and its measurement
when it ends, so a stopped study rerun with the same command resumes where it stopped.
"""
import dataclasses
import hashlib
import os
import time

from absl import logging
import jax
import numpy as np

from creditfield import diagnostics
from creditfield import estimator_training
from creditfield import estimators
from creditfield import rng
from creditfield import seeds as seeds_lib
from creditfield.infra import checkpoints
from creditfield.infra import compilation
from creditfield.infra import errors
from creditfield.infra import outputs
from creditfield.infra import plots
from creditfield.infra import resumable
from creditfield.infra import sharding
from creditfield.studies import common

TABLE = ("study", "credit", "M", "steps", "conditioning", "targets", "variant", "layer",
         "gamma", "gamma_weighted", "rho", "nudge", "estimator_loss", "seconds")
GROUP = ("study", "credit", "M", "steps", "conditioning", "targets", "variant", "layer")
# Ablation switches: which config section a `name=value` variant overrides.
VARIANT_SECTIONS = ("credit.vector_field", "credit.scalar_bridge", "credit", "estimator")


@dataclasses.dataclass(frozen=True)
class Entry:
  """One estimator variant: its name, M, estimator steps, conditioning, targets and switches."""
  study: str
  name: str
  M: int
  steps: int
  conditioning: str
  targets: str
  variant: tuple[tuple[str, str, object], ...] = ()  # (section, key, value) overrides

  def key(self):
    """What determines the result: entries equal here share one training."""
    return (self.name, self.M, self.steps, self.conditioning, self.targets, self.variant)


def parse_variant(config, switch: str, name: str) -> tuple[str, str, object]:
  """'residual=True' -> ('credit.vector_field', 'residual', True), typed like the default;
  `steps` is config.estimator.steps."""
  key, _, text = switch.partition("=")
  if key == "steps":
    return "estimator", key, int(text)
  sections = [s for s in VARIANT_SECTIONS
              if (name == "vector_field" or s != "credit.vector_field")
              and (name == "scalar_bridge" or s != "credit.scalar_bridge")]
  for section in sections:
    node = config
    for part in section.split("."):
      node = node[part]
    if key in node:
      default = node[key]
      if isinstance(default, bool):
        value = text == "True"
      elif isinstance(default, (tuple, list)):
        value = tuple(type(default[0])(x) for x in text.split(":"))
      else:
        value = type(default)(text)
      return section, key, value
  raise errors.UserError(f"config.ablation.variants names {key!r}, which is not an option of "
                   f"{name} ({', '.join(sections)}).")


def entries(config) -> list[Entry]:
  c = config.credit
  names = estimators.parse_names(c.names)
  m_values = tuple(c.M_values) if c.M_values else (c.M,)
  steps = config.estimator.steps
  out = []
  for name in names:
    for m in (m_values if name in estimators.USES_M else (c.M,)):
      out.append(Entry("main", name, m, steps, c.conditioning, c.targets))
  a = config.get("ablation")
  if a is not None and a.enabled:
    vf = lambda study, **kw: Entry(study, **dict(dict(
        name="vector_field", M=a.M, steps=steps, conditioning=c.conditioning,
        targets=c.targets), **kw))
    out += [vf("ablation_M", M=m) for m in a.M_values]
    out += [vf("ablation_targets", targets=t) for t in a.targets.split(",") if t]
    out += [vf("ablation_conditioning", conditioning=k) for k in a.conditioning.split(",") if k]
    for variant in filter(None, a.variants.split(",")):
      name, _, switches = variant.partition(":")
      if name not in estimators.NAMES:  # no `name:` prefix (a tuple value may hold ':')
        name, switches = "vector_field", variant
      entry = vf("", name=name)
      if entry.name not in estimators.USES_M:
        entry = dataclasses.replace(entry, M=c.M)
      overrides, keys = [], []
      for switch in switches.split("+"):  # `a=1+b=2`: several switches at once
        section, key, value = parse_variant(config, switch, entry.name)
        keys.append(key)
        if key in ("steps", "conditioning"):  # entry fields, so the rows show them
          entry = dataclasses.replace(entry, **{key: value})
        else:
          overrides.append((section, key, value))
      study = f"ablation_{keys[0]}" if len(keys) == 1 else "ablation_combined"
      out.append(dataclasses.replace(entry, study=study, variant=tuple(overrides)))
  return out


def entry_config(config, entry: Entry):
  """The config an entry trains with: the study's, with the entry's overrides."""
  c = config.copy_and_resolve_references()
  with c.unlocked():
    c.credit.conditioning, c.credit.targets = entry.conditioning, entry.targets
    c.estimator.steps = entry.steps
    for section, key, value in entry.variant:
      node = c
      for part in section.split("."):
        node = node[part]
      node[key] = value
  return c


def entry_tags(entry: Entry, learned: bool, seed: int) -> dict:
  """Row keys for an entry: M, steps, conditioning and targets only where they apply."""
  tags = dict(study=entry.study, credit=entry.name, seed=seed)
  if entry.name in estimators.USES_M:
    tags["M"] = entry.M
  if learned:
    tags.update(steps=entry.steps, conditioning=entry.conditioning)
  if entry.name == "vector_field":
    tags["targets"] = entry.targets
  if entry.variant:
    tags["variant"] = ",".join(f"{key}={value}" for _, key, value in entry.variant)
  return tags


def gamma_monitor(r, est, student_params, seed: int, key):
  """Gamma (hidden-layer mean) on a training batch and on the held-out batch, for logging
  while an estimator trains: the gap between them is how much it overfits."""
  train_batch = common.diagnostics_batch(r, seed, split="train")
  heldout_batch = common.diagnostics_batch(r, seed)

  def monitor(phi):
    out = {}
    for tag, (x, y) in (("train", train_batch), ("heldout", heldout_batch)):
      gamma = diagnostics.evaluate_credit(est, student_params, x, y, phi, key,
                                          r.config.diagnostics)["gamma"]
      out[f"gamma_{tag}"] = float(gamma[:-1].mean())
    return out
  return monitor


def parameter_shapes(r, est, estimator_cfg, key, student_params, num_seeds: int):
  """The shapes (`jax.ShapeDtypeStruct`) of the estimator's parameters stacked over seeds, as
  its training returns them and placed as it places them (`sharding.replicated_shapes`),
  without training or initialising anything (`key`: any of its keys)."""
  one = jax.eval_shape(lambda key: estimator_training.initial_params(
      est, key, student_params, r.dataset.x_train, r.dataset.y_train, estimator_cfg.batch_size),
                       key)
  return sharding.replicated_shapes(one, (num_seeds,))


def training_jobs(r, est, estimator_cfg, keys, student_params, seeds) -> list:
  """Zero-argument jobs that compile what training `est` (`estimator_training.train_seeds` with
  `estimator_cfg`, the seeds' `keys` and `gamma_monitor`s) runs: its training chunk and its
  monitor's quality program. A study runs them in the background (`compilation.in_background`)
  and the training waits for them. None for an estimator that does not learn."""
  if not est.learned or estimator_cfg.steps == 0:
    return []
  cfg = r.config
  return [lambda: estimator_training.compile_seeds(
              est, student_params, r.dataset.x_train, r.dataset.y_train, estimator_cfg, keys,
              vmapped=cfg.vmap_seeds, skip_nonfinite=cfg.skip_nonfinite,
              image_shape=r.dataset.image_shape),
          _quality_job(r, est, estimator_cfg, keys, student_params, seeds)]


def measurement_jobs(r, est, estimator_cfg, keys, student_params, seeds) -> list:
  """What measuring `est` compiles, as jobs for the background: `training_jobs`, or for an
  estimator that does not learn its quality program alone (cold on the H200, the pivot's
  entries that train nothing took 11-31 s each, waiting for their compiles one after another)."""
  return (training_jobs(r, est, estimator_cfg, keys, student_params, seeds)
          or [_quality_job(r, est, estimator_cfg, keys, student_params, seeds)])


def _quality_job(r, est, estimator_cfg, keys, student_params, seeds):
  """A job compiling `est`'s quality program (its monitor's and its measurement's) for its
  parameters as training returns them."""
  phi_S = parameter_shapes(r, est, estimator_cfg, keys[0], student_params, len(seeds))
  x, y = common.diagnostics_batch(r, seeds[0])  # every seed's batches have this shape
  program = diagnostics.quality_program(est, r.config.diagnostics)
  return lambda: program.lower(seeds_lib.pick(phi_S, 0), student_params, x, y,
                               rng.stream(keys[0], "eval")).compile()


def _keys(entry: Entry, seeds):
  """The entry's estimator stream for every seed, stacked."""
  return seeds_lib.keys(lambda seed: rng.estimator_stream(seed, entry.name, entry.M), seeds)


def _measure(r, config, entry, est, seeds, student_params, batches, resume_dir):
  """Trains (if learned) and measures one entry for every seed (trained together, as one
  program, with `config.vmap_seeds`; its state saved in `resume_dir` to resume from); returns
  per seed (per-layer quality, extra row keys)."""
  keys = _keys(entry, seeds)
  last = {}

  def record(records):
    r.metrics(records)
    last.update({rec["seed"]: rec for rec in records})

  cfg = entry_config(config, entry)
  tic = time.perf_counter()
  phis = estimator_training.train_seeds(
      est, student_params, r.dataset.x_train, r.dataset.y_train, cfg.estimator, keys,
      [entry_tags(entry, est.learned, seed) for seed in seeds], vmapped=config.vmap_seeds,
      on_metrics=record, skip_nonfinite=config.skip_nonfinite, image_shape=r.dataset.image_shape,
      monitors=[gamma_monitor(r, est, student_params, seed, rng.stream(keys[i], "eval"))
                for i, seed in enumerate(seeds)], resume_dir=resume_dir)
  jax.block_until_ready(phis)
  seconds = (time.perf_counter() - tic) / len(seeds)
  out = []
  for i, seed in enumerate(seeds):
    quality = diagnostics.evaluate_credit(est, student_params, *batches[i],
                                          seeds_lib.pick(phis, i), rng.stream(keys[i], "eval"),
                                          config.diagnostics)
    # Training cost per seed (compilation included) and final loss, for learned estimators.
    extras = (dict(estimator_loss=last.get(seed, {}).get("total"), seconds=seconds)
              if est.learned else {})
    out.append((quality, extras))
  return out


def entry_unit(workdir: str, entry: Entry) -> resumable.Unit:
  """The resumable unit of an entry: its training's saved state, then its measurement."""
  digest = hashlib.sha256(repr(entry.key()).encode()).hexdigest()[:10]
  return resumable.Unit(os.path.join(workdir, "entries", f"{entry.name}_M{entry.M}_{digest}"))


def _to_record(measured: list) -> list[dict]:
  """An entry's per-seed (quality, extras) as JSON; `_from_record` gives them back exactly."""
  return [dict(quality={k: (np.asarray(v).tolist(), np.asarray(v).dtype.name)
                        for k, v in quality.items()}, extras=extras)
          for quality, extras in measured]


def _from_record(record: list[dict]) -> list:
  return [({k: np.asarray(v, dtype) for k, (v, dtype) in seed["quality"].items()},
           seed["extras"]) for seed in record]


def summarize(rows: list[dict]) -> list[dict]:
  """Mean ± std over seeds of every measured combination (the `seed == "all"` rows)."""
  return outputs.summarize(rows, GROUP, diagnostics.METRICS + ("estimator_loss", "seconds"))


def report_markdown(summary: list[dict]) -> str:
  """One line per entry: per-layer Gamma, the hidden-layer mean (± std over seeds) of every
  metric, and the terminal layer's Gamma."""
  entries: dict[tuple, dict] = {}
  for r in summary:
    entries.setdefault(tuple(str(r.get(k)) for k in GROUP[:-1]), {})[r["layer"]] = r
  f = lambda r, k: f"{r[k]:.3f} ± {r.get(k + '_std', 0):.3f}"
  lines = ["| study | credit | steps | conditioning | targets | variant | Gamma per hidden layer | "
           "Gamma | gamma_weighted | rho | nudge | terminal Gamma | seeds |",
           "|" + "---|" * 13]
  for layers in entries.values():
    mean, terminal = layers["mean"], layers["terminal"]
    per_layer = ", ".join(f"{layers[l]['gamma']:.3f}" for l in sorted(
        k for k in layers if isinstance(k, int)))
    lines.append("| " + " | ".join([
        mean["study"], common.credit_label(mean), str(mean.get("steps", "")),
        mean.get("conditioning", ""), mean.get("targets", ""), mean.get("variant", ""),
        per_layer, f(mean, "gamma"), f(mean, "gamma_weighted"), f(mean, "rho"), f(mean, "nudge"),
        f"{terminal['gamma']:.3f}", str(mean["num_seeds"])]) + " |")
  return "\n".join(lines) + "\n"


def plot(workdir: str, summary: list[dict], records: list[dict]) -> None:
  """gamma_per_layer.png (main entries) and estimator_training.png (losses, 1 - R^2 of the
  targets, Gamma on train and held-out batches) from the summary rows and metrics.jsonl."""
  plots.lines([s for s in summary if isinstance(s["layer"], int) and s["study"] == "main"],
              os.path.join(workdir, "gamma_per_layer.png"), x="layer", y="gamma",
              label=common.credit_label,
              title="Gamma per hidden layer (mean ± std over seeds)")
  learned = [rec for rec in records if "gamma_heldout" in rec and rec.get("study") == "main"]
  if learned:
    plots.training_curves(learned, os.path.join(workdir, "estimator_training.png"),
                          keys=sorted({k for rec in learned for k in rec} &
                                      {"total", "perturbation", "target_fvu", "gamma_train",
                                       "gamma_heldout", "bridge", "gradient"}),
                          label=lambda rec: f"{common.credit_label(rec)} s{rec['seed']}")


def run(config, workdir: str) -> dict:
  r = common.start(config, workdir)
  todo = entries(config)
  seeds = seeds_lib.seed_list(config)
  # Built once, before any work (bad settings fail fast), and every seed reuses them.
  built = {e.key(): estimators.make(e.name, r.spec, entry_config(config, e).credit, e.M)
           for e in todo}
  student_params, snapshot_eval = common.student(r)
  batches = [common.diagnostics_batch(r, seed) for seed in seeds]
  # Every entry's training and quality programs compile in background threads, in the entries'
  # order, while the first ones run (one thread: each entry compiles its own as it comes).
  units = {e.key(): entry_unit(workdir, e) for e in todo}
  compiled = {}
  if compilation.background_workers() > 1:
    unique = [e for e in {e.key(): e for e in todo}.values()
              if units[e.key()].finished() is None]
    jobs = [(e.key(), job) for e in unique for job in measurement_jobs(
        r, built[e.key()], entry_config(config, e).estimator, _keys(e, seeds), student_params,
        seeds)]
    for (key, _), future in zip(jobs, compilation.in_background([job for _, job in jobs])):
      compiled.setdefault(key, []).append(future)
  rows = []
  measured = {}  # entry.key() -> per seed (quality, extras): ablation points equal to main ones
  for entry in todo:
    if entry.key() not in measured:
      unit = units[entry.key()]
      record = unit.finished()  # measured by an earlier run of this workdir
      if record is None:
        for future in compiled.get(entry.key(), []):
          future.result()
        measured[entry.key()] = _measure(r, config, entry, built[entry.key()], seeds,
                                         student_params, batches,
                                         os.path.join(unit.directory, "training"))
        unit.finish(_to_record(measured[entry.key()]))
      else:
        measured[entry.key()] = _from_record(record)
    for seed, (quality, extras) in zip(seeds, measured[entry.key()]):
      entry_rows = diagnostics.layer_rows(
          dict(entry_tags(entry, "estimator_loss" in extras, seed), **extras), quality)
      rows.extend(entry_rows)
      mean, terminal = entry_rows[-2], entry_rows[-1]
      logging.info("%s (%s) seed %d: hidden-layer gamma %.3f rho %.3f nudge %.3f; terminal "
                   "gamma %.3f", entry.name, entry.study, seed, mean["gamma"], mean["rho"],
                   mean["nudge"], terminal["gamma"])
    # Results so far, after every entry: a long run that is stopped keeps its table.
    summary = summarize(rows)
    meta = outputs.run_meta(r.dataset, experiment=config.experiment,
                            wall_seconds=r.stopwatch.seconds(), snapshot_eval=snapshot_eval,
                            student=checkpoints.spec_to_json(r.spec), vmap_seeds=config.vmap_seeds,
                            seconds="estimator training wall time per seed (the seeds of an "
                                    "entry train together), compilation included unless it "
                                    "ran in the background (several compile threads); of the "
                                    "last run only where a stopped run resumed",
                            layers="integers 0..L-1; mean = mean over those hidden layers; "
                                   "terminal = layer L")
    outputs.write_results(workdir, summary + rows, meta, columns=TABLE)
    outputs.write_text(os.path.join(workdir, "tables.md"), report_markdown(summary))
  print(outputs.text_table([s for s in summary if s["layer"] in ("mean", "terminal")], TABLE))
  plot(workdir, summary, r.metrics.read())
  r.metrics.close()
  return {"rows": summary + rows, "meta": meta}
