"""Phase 6A (exploitability: credits x k) and 6C (rule swap: credits x rules x lr x seeds).

Protocol (DESIGN.md §5): a BP snapshot (restored from `config.snapshot.path`, or
trained and saved here); every learned estimator trained against the frozen snapshot, all
seeds at once (saved under workdir/estimators/ with the settings that made them, and
restored on a rerun with the same settings); Gamma and rho of each credit on the snapshot;
then for every credit x rule (x eta) one jitted k-step scan, vmapped over the lrs and the
seeds, reporting delta_loss_update and delta_loss_heldout. The credits run behind a
`lax.switch` (estimators/switch.py; one per compile thread, `credit_switches`), so the study
compiles one sweep, one quality and one update-diagnostics program per switch, in the
background while the estimators train. `oracle_dial` runs at every
cosine of `phase6.dial_gammas`, and Spearman's rho of delta loss with Gamma (over the dial,
and over the other credits) becomes `kind: "correlation"` rows.
"""
import functools
import operator
import os

from absl import logging
import jax
import numpy as np

from creditfield import diagnostics
from creditfield import estimator_training
from creditfield import estimators
from creditfield import phase6_sweep
from creditfield import rng
from creditfield import rules as rules_lib
from creditfield import sampling
from creditfield import seeds as seeds_lib
from creditfield import stats
from creditfield import update_diagnostics
from creditfield.infra import checkpoints
from creditfield.infra import compilation
from creditfield.infra import outputs
from creditfield.infra import plots
from creditfield.infra import run_stats
from creditfield.infra import validation
from creditfield.studies import common
from creditfield.studies import credit_quality

TABLE = ("credit", "M", "dial_gamma", "rule", "eta", "lr", "k", "gamma", "rho",
         "delta_loss_update", "delta_loss_heldout")
GROUP = ("credit", "M", "dial_gamma", "rule", "eta", "lr", "k")
DELTAS = ("delta_loss_update", "delta_loss_heldout")
# Credit quality on the snapshot: hidden-layer means, and the terminal layer apart.
QUALITY = ("gamma", "gamma_weighted", "rho", "gamma_terminal", "gamma_weighted_terminal",
           "rho_terminal")
# The update-level diagnostics of each credit x rule at the snapshot (update_diagnostics.py).
UPDATES = update_diagnostics.HEADLINES


def report_markdown(final: list[dict], correlations: list[dict], experiment: str) -> str:
  """The k = K tables: Gamma/rho per credit, delta loss by lr (6A) or by rule per lr (6C),
  target_shift by its effective step, and the rank correlations of delta loss with Gamma."""
  k = final[0]["k"]
  final = [dict(r, credit_point=common.credit_label(r), rule_eta=common.rule_label(r))
           for r in final]
  credits = {r["credit_point"]: r for r in final}
  spread = ("mean over snapshots ± std over snapshots" if final[0].get("snapshot") == "all"
            else "mean ± std over seeds")
  parts = [f"Credit quality on the snapshot (hidden layers 0..L-1; terminal = layer L; {spread}):",
           "",
           "| credit | gamma | gamma_weighted | rho | gamma terminal |", "|---|---|---|---|---|"]
  cell = lambda r, k: f"{r[k]:.3f} ± {r.get(k + '_std', 0):.3f}"
  parts += [f"| {c} | " + " | ".join(cell(r, k) for k in (
      "gamma", "gamma_weighted", "rho", "gamma_terminal")) + " |" for c, r in credits.items()]
  for value in DELTAS:
    if experiment == "phase6a":
      parts += ["", f"{value} after k={k} steps, by learning rate:", "",
                outputs.pivot_markdown(final, "credit_point", "lr", value,
                                       column_label=lambda lr: f"lr={lr:g}")]
      continue
    for lr in sorted({r["lr"] for r in final}):
      parts += ["", f"{value} after k={k} steps at lr={lr:g}:", "",
                outputs.pivot_markdown([r for r in final if r["lr"] == lr], "credit_point",
                                       "rule_eta", value)]
  shifted = [dict(r, eta_lr=r["eta"] * r["lr"]) for r in final if r["rule"] == "target_shift"]
  if shifted:
    parts += ["", "target_shift under SGD: its block gradient is eta times inner_product's on "
              "the unit credit (tests/test_rules.py), so every block moves as inner_product on "
              "the unit credit at step eta·lr and only the head (exact gradient, step lr) tells "
              "two rows of equal eta·lr apart. delta_loss_update by eta·lr:", "",
              outputs.pivot_markdown(sorted(shifted, key=lambda r: r["eta_lr"]), "credit_point",
                                     "eta_lr", "delta_loss_update",
                                     column_label=lambda v: f"{v:g}")]
  first_lr = min(r["lr"] for r in final)
  parts += ["", "Update alignment at the snapshot (cosine of each block's first update with "
            "backprop's on the diagnostics batch, mean over blocks; it does not depend on lr):",
            "", outputs.pivot_markdown([r for r in final if r["lr"] == first_lr],
                                       "credit_point", "rule_eta", "update_alignment")]
  over_snapshots = final[0].get("snapshot") == "all"
  if over_snapshots:
    parts += ["", f"Claims across {final[0]['num_snapshots']} snapshots: each cell is the mean "
              "over snapshots of the seed-mean delta loss after k={k} steps, its 95% t-interval "
              "over snapshots, and on how many snapshots its sign holds; **bold**: the "
              "interval excludes zero.".replace("{k}", str(k))]
    for value in DELTAS:
      for rule_eta in dict.fromkeys(r["rule_eta"] for r in final):
        parts += ["", f"{value}, {rule_eta}:", "", outputs.pivot_markdown(
            [r for r in final if r["rule_eta"] == rule_eta], "credit_point", "lr", value,
            column_label=lambda lr: f"lr={lr:g}", cell=outputs.interval_cell)]
  headline = [c for c in correlations if c["snapshot"] == final[0].get("snapshot")]
  if headline:
    spread = (": mean over snapshots, 95% t-interval over snapshots, on how many snapshots its "
              "sign holds" if over_snapshots else ", with a 95% bootstrap interval over seeds")
    holds = " sign holds |" if over_snapshots else ""
    parts += ["", f"Spearman's rho of delta loss (k={k}) with hidden-layer Gamma, over the dial's "
              f"points and over the other credits{spread} (negative: better credit, larger "
              "decrease):", "",
              f"| rule | lr | delta | over | rho | interval |{holds} points | seeds |",
              "|" + "---|" * (9 if over_snapshots else 8)]
    for c in headline:
      holds = f" {c['sign_holds']}/{c['num_snapshots']} |" if over_snapshots else ""
      parts.append(f"| {common.rule_label(c)} | {c['lr']:g} | {c['delta']} | {c['over']} | "
                   f"{c['spearman']:.2f} | {_interval(c)} |{holds} {c['num_points']} | "
                   f"{c['num_seeds']} |")
  return "\n".join(parts) + "\n"


def _interval(c: dict) -> str:
  """'[low, high]' of a correlation row; 'n/a' where there was no spread to estimate."""
  if c["ci_low"] is None or not np.isfinite(c["ci_low"]):
    return "n/a"
  return f"[{c['ci_low']:.2f}, {c['ci_high']:.2f}]"


def rule_variants(cfg) -> list[tuple[str, float | None]]:
  """(rule, eta) pairs: target_shift at every eta, other eta-rules at `stretch_eta`."""
  out = []
  for rule in rules_lib.parse_rules(cfg.rules):
    if rule == "target_shift":
      out += [(rule, float(eta)) for eta in cfg.etas]
    elif rule in rules_lib.USES_ETA:
      out.append((rule, float(cfg.stretch_eta)))
    else:
      out.append((rule, None))
  return out


def _estimator_keys(est, seeds, m: int):
  return seeds_lib.keys(lambda seed: rng.estimator_stream(seed, est.name, m), seeds)


def _estimator_paths(est, seeds, m: int, directory: str) -> list[str]:
  return [os.path.join(directory, f"{est.name}_M{m}_seed{seed}") for seed in seeds]


def _restorable(est, seeds, m: int, directory: str) -> bool:
  """Whether `trained_estimators` restores this estimator instead of training it."""
  return est.learned and all(os.path.isdir(p) for p in _estimator_paths(est, seeds, m, directory))


def trained_estimators(r, est, student_params, seeds, m: int, directory: str, tags: dict):
  """The estimator's parameters for every seed, stacked: restored from `directory` (if its
  estimator config is unchanged), or trained (all seeds at once) and saved there."""
  keys = _estimator_keys(est, seeds, m)
  paths = _estimator_paths(est, seeds, m, directory)
  settings = checkpoints.estimator_settings(r.config, r.dataset.fingerprint, student_params)
  if _restorable(est, seeds, m, directory):
    like = estimator_training.initial_params(est, keys[0], student_params, r.dataset.x_train,
                                             r.dataset.y_train, r.config.estimator.batch_size)
    logging.info("Restoring the trained %s (%d seeds) from %s", est.name, len(seeds),
                 os.path.dirname(paths[0]))
    return seeds_lib.stack([checkpoints.restore_estimator(path, like, settings)
                            for path in paths])
  phis = estimator_training.train_seeds(
      est, student_params, r.dataset.x_train, r.dataset.y_train, r.config.estimator, keys,
      [dict(credit=est.name, M=m, seed=seed, **tags) for seed in seeds],
      vmapped=r.config.vmap_seeds, on_metrics=r.metrics, skip_nonfinite=r.config.skip_nonfinite,
      image_shape=r.dataset.image_shape,
      resume_dir=os.path.join(directory, f"{est.name}_M{m}_training"),
      monitors=[credit_quality.gamma_monitor(r, est, student_params, seed,
                                             rng.stream(keys[i], "eval"))
                for i, seed in enumerate(seeds)])
  if est.learned:
    for i, path in enumerate(paths):
      checkpoints.save_estimator(path, seeds_lib.pick(phis, i), settings)
  return phis


def _training_jobs(r, est, student_params, seeds, m: int, directory: str) -> list:
  """Jobs that compile what `trained_estimators` will run for `est`; none if it is restored."""
  if _restorable(est, seeds, m, directory):
    return []
  return credit_quality.training_jobs(r, est, r.config.estimator,
                                      _estimator_keys(est, seeds, m), student_params, seeds)


def credit_points(name: str, phis, cfg, num_seeds: int) -> list[tuple[dict, object]]:
  """(row keys, stacked parameters) per point of a credit: one, or the dial's every gamma."""
  if name != "oracle_dial":
    return [({}, phis)]
  return [({"dial_gamma": float(g)}, seeds_lib.stack([estimators.dial_params(g)] * num_seeds))
          for g in cfg.dial_gammas]


class Sweeps:
  """The k-step sweeps of one study: every seed at once (`config.vmap_seeds`) or one by one."""

  def __init__(self, config, student_params, batches_S, heldout, lrs, projections):
    self.vmapped = config.vmap_seeds
    self.p = config.phase6
    self.student_params, self.batches_S, self.heldout = student_params, batches_S, heldout
    self.lrs, self.projections = lrs, projections

  def _args(self, est, phi_S, keys_S, rule: str, eta, seed=None):
    """Arguments of `sweep_seeds` (seed None) or of `sweep` for one seed."""
    at = (lambda tree: tree) if seed is None else (lambda tree: seeds_lib.pick(tree, seed))
    (bx, by), keys = at(self.batches_S), at(keys_S)
    phi = phi_S if seed is None else estimators.pick_seed(phi_S, seed)
    return ((est, phi, self.student_params, bx, by, *self.heldout, keys, self.lrs,
             rules_lib.rule_index(rule), 0.0 if eta is None else eta, self.projections),
            dict(optimizer=self.p.optimizer, update_embed=self.p.update_embed))

  def compile(self, est, phi_S, keys_S) -> None:
    """Compiles the program of `est` (a credit switch: one serves every credit, rule and eta)
    without running it."""
    fn, seed = (phase6_sweep.sweep_seeds, None) if self.vmapped else (phase6_sweep.sweep, 0)
    args, kwargs = self._args(est, phi_S, keys_S, "inner_product", None, seed)
    fn.lower(*args, **kwargs).compile()

  def run(self, est, phi_S, keys_S, rule: str, eta):
    """(delta_loss_update, delta_loss_heldout), each (S, num_lrs, K)."""
    if self.vmapped:
      args, kwargs = self._args(est, phi_S, keys_S, rule, eta)
      return jax.device_get(phase6_sweep.sweep_seeds(*args, **kwargs))
    per_seed = []
    for seed in range(keys_S.shape[0]):
      args, kwargs = self._args(est, phi_S, keys_S, rule, eta, seed)
      per_seed.append(jax.device_get(phase6_sweep.sweep(*args, **kwargs)))
    return tuple(np.stack([d[i] for d in per_seed]) for i in range(2))


def credit_switches(built: dict, num_groups: int) -> list[tuple[tuple[str, ...], object]]:
  """The credits behind `num_groups` switches (`estimators.switch`), as (names, switch): each
  switch's sweep, quality and update programs serve its credits, every rule, eta, lr and seed.

  One switch compiles the least (the scaffolding once), but its compile is one thread's work.
  Several compile in parallel threads (`compilation.in_background`); on an H200 (16 cores, one
  GPU that autotunes every program) four took longer than one (CIFAR-10 Phase 6C from an empty
  cache: 109 s against 87.5 s), so the configs use one (`phase6.compile_groups`).
  """
  names = list(built)
  num_groups = max(1, min(num_groups, len(names)))
  bounds = [round(g * len(names) / num_groups) for g in range(num_groups + 1)]
  groups = [tuple(names[a:b]) for a, b in zip(bounds, bounds[1:])]
  return [(group, estimators.switch([built[n] for n in group])) for group in groups]


def run(config, workdir: str) -> dict:
  names = estimators.parse_names(config.credit.names)
  variants = rule_variants(config.phase6)
  r = common.start(config, workdir)
  p = config.phase6
  seeds = seeds_lib.seed_list(config)
  built = {name: estimators.make(name, r.spec, config.credit) for name in names}
  switches = credit_switches(built, p.compile_groups or compilation.background_workers())
  num_test = r.dataset.x_test.shape[0]
  if p.heldout_size > num_test:  # a silently smaller held-out set would be another measurement
    raise validation.ConfigError(f"config.phase6.heldout_size={p.heldout_size} is larger than "
                                 f"the test split of {r.dataset.name} ({num_test} samples).")
  several = len(common.snapshot_ids(config)) > 1
  rows, snapshot_evals = [], {}
  # Every snapshot sees the same batches, projections and estimator seeds (paired: snapshots
  # differ only by the student), and reuses the programs the first one compiled.
  for index, snap in enumerate(common.snapshots(r)):
    snapshot_evals[snap.id] = snap.eval
    estimators_dir = os.path.join(r.workdir, "estimators",
                                  *([f"snapshot{snap.id}"] if several else []))
    rows += _snapshot_rows(r, built, switches, snap, seeds, variants, estimators_dir,
                           compile=index == 0, tags=dict(snapshot=snap.id) if several else {})
  meta = outputs.run_meta(r.dataset, experiment=config.experiment,
                          wall_seconds=r.stopwatch.seconds(),
                          snapshot_eval=(snapshot_evals if several
                                         else next(iter(snapshot_evals.values()))),
                          student=checkpoints.spec_to_json(r.spec), vmap_seeds=config.vmap_seeds)
  with run_stats.stage("outputs"):
    result = write_outputs(workdir, rows, config, meta)
  r.metrics.close()
  return result


def write_outputs(workdir: str, rows: list[dict], config, meta: dict) -> dict:
  """The summaries (over seeds per snapshot, and over snapshots when there are several), the
  correlations, results.json/csv/md, tables.md and the plots, from the per-seed rows (of one
  run, or merged from several: experiments/merge_results.py)."""
  p = config.phase6
  snapshot_ids = list(dict.fromkeys(r["snapshot"] for r in rows))
  several = len(snapshot_ids) > 1
  per_snapshot = outputs.summarize(rows, GROUP + ("snapshot",), QUALITY + UPDATES + DELTAS)
  summary = per_snapshot + (outputs.summarize_over_snapshots(per_snapshot, GROUP,
                                                             QUALITY + UPDATES + DELTAS)
                            if several else [])
  # The headline rows: over snapshots when there are several.
  headline = [s for s in summary if s["snapshot"] == ("all" if several else snapshot_ids[0])]
  final = [s for s in headline if s["k"] == p.k]
  correlations = correlation_rows([row for row in rows if row["k"] == p.k], config)
  meta = dict(meta, snapshots=snapshot_ids, optimizer=p.optimizer,
              heldout="the first heldout_size samples of the test split",
              gamma="mean over hidden layers 0..L-1; *_terminal: layer L",
              intervals="*_ci_low/_ci_high: 95% Student-t interval of the mean, over seeds "
                        "(per snapshot) or over snapshots (snapshot: all)")
  outputs.write_results(workdir, summary + correlations + rows, meta, columns=TABLE)
  outputs.write_text(os.path.join(workdir, "tables.md"),
                     report_markdown(final, correlations, config.experiment))
  print(f"Delta loss after k={p.k} local steps ({config.experiment}):")
  print(outputs.text_table(final, TABLE))
  _plot(workdir, headline, final, rule_variants(p), p)
  return {"rows": summary + correlations + rows, "meta": meta}


def _snapshot_rows(r, built, switches, snap, seeds, variants, estimators_dir, compile: bool,
                   tags: dict) -> list[dict]:
  """The per-seed rows (credit x rule x lr x k) of one snapshot, every credit run through its
  switch of `switches` (`credit_switches`); `tags` go on its estimators' training records."""
  config, p, m = r.config, r.config.phase6, r.config.credit.M
  student_params = snap.params
  projections = rules_lib.projections(rng.stream(config.seed, "phase6", "projections"), r.spec)
  heldout_xy = (r.dataset.x_test[:p.heldout_size], r.dataset.y_test[:p.heldout_size])
  batches = seeds_lib.stack([sampling.sample_batches(
      rng.stream(seed, "phase6", "batches"), r.dataset.x_train, r.dataset.y_train, p.k,
      p.batch_size) for seed in seeds])
  sweeps = Sweeps(config, student_params, batches, heldout_xy,
                  jax.numpy.asarray(p.lrs, dtype=jax.numpy.float32), projections)
  sweep_keys = {name: seeds_lib.keys(
      lambda seed, name=name: rng.stream(rng.estimator_stream(seed, name, m), "phase6"), seeds)
      for name in built}
  diagnostic_batches = [common.diagnostics_batch(r, seed) for seed in seeds]
  # The study's programs compile in the background from the parameters' shapes (known before
  # training): each switch's sweep, quality and update diagnostics (serving its credits, every
  # rule, eta, lr and seed) and, with several compile threads, the estimators' training chunks
  # and monitors. An estimator waits for its own before it trains; the sweeps for the rest.
  waits: dict[str, list] = {}  # the compiles each part waits for: an estimator's, the sweeps'
  if compile:
    shapes = {name: credit_quality.parameter_shapes(
        r, est, config.estimator, _estimator_keys(est, seeds, m)[0], student_params,
        len(seeds)) for name, est in built.items()}
    # With one background thread the estimators compile their own programs as they come to
    # train, beside it (two threads on two cores); with more, in the background too.
    several = compilation.background_workers() > 1
    training = [(name, job) for name, est in built.items() if several for job in _training_jobs(
        r, est, student_params, seeds, m, estimators_dir)]
    study = [[("sweeps", job) for job in _program_jobs(
        switched, sweeps, [shapes[n] for n in group], next(iter(sweep_keys.values())),
        student_params, diagnostic_batches[0], projections, config)]
             for group, switched in switches]
    sweep_jobs, other_jobs = [jobs[0] for jobs in study], [j for jobs in study for j in jobs[1:]]
    # The sweeps (the longest compiles) first.
    ordered = sweep_jobs + training + other_jobs
    for (who, _), future in zip(ordered, compilation.in_background([job for _, job in ordered])):
      waits.setdefault(who, []).append(future)
  with run_stats.stage("estimators"):
    phis = {}
    for name, est in built.items():
      for future in waits.get(name, []):
        future.result()
      phis[name] = trained_estimators(r, est, student_params, seeds, m, estimators_dir, tags)
  if "sweeps" in waits:
    with run_stats.stage("compile"):  # what is left of it once the estimators are trained
      for future in waits["sweeps"]:
        future.result()
  rows = []  # stages: each call, with its transfer to the host, adds to its stage
  # Each seed's parameters of each credit, sliced once (a slice is tens of small device ops).
  phis_by_seed = {name: [seeds_lib.pick(phi_S, i) for i in range(len(seeds))]
                  for name, phi_S in phis.items()}
  for group, switched in switches:
    for which, name in enumerate(group):
      eval_keys = [rng.stream(rng.estimator_stream(seed, name, m), "eval") for seed in seeds]
      for point, phi_S in credit_points(name, phis[name], p, len(seeds)):
        # This credit (at this point) behind its switch; the others' parameters ride along.
        switch_S = estimators.switch_params(which, [phi_S if n == name else phis[n]
                                                    for n in group])
        per_seed = [estimators.switch_params(which, [
            seeds_lib.pick(phi_S, i) if n == name else phis_by_seed[n][i] for n in group])
                    for i in range(len(seeds))]
        bases = []
        for i, seed in enumerate(seeds):
          with run_stats.stage("quality"):
            quality = diagnostics.evaluate_credit(
                switched, student_params, *diagnostic_batches[i], per_seed[i], eval_keys[i],
                config.diagnostics)
          bases.append(dict(credit=name, seed=seed, snapshot=snap.id, **point,
                            **diagnostics.summary(
                                {k: quality[k] for k in ("gamma", "gamma_weighted", "rho")}),
                            **({"M": m} if name in estimators.USES_M else {})))
        for rule, eta in variants:
          with run_stats.stage("sweeps"):
            du, dh = sweeps.run(switched, switch_S, sweep_keys[name], rule, eta)
          for i, seed in enumerate(seeds):
            # What the first update is, at the snapshot, on the diagnostics batch, with the same
            # credit as the quality above (the same key).
            with run_stats.stage("update_diagnostics"):
              updates = update_diagnostics.flat(update_diagnostics.evaluate(
                  switched, student_params, *diagnostic_batches[i], per_seed[i], eval_keys[i],
                  config.diagnostics, rule, eta, projections, p.update_embed,
                  with_quality=False)[1])
            base = dict(bases[i], **{k: updates[k] for k in UPDATES})
            for j, lr in enumerate(p.lrs):
              for k in range(p.k):
                rows.append(dict(base, rule=rule, eta=eta, lr=float(lr), k=k + 1,
                                 delta_loss_update=float(du[i, j, k]),
                                 delta_loss_heldout=float(dh[i, j, k])))
          logging.info("snapshot %s %s %s %s eta=%s: dL_update(k=%d), mean over seeds %s",
                       snap.id, name, point, rule, eta, p.k, du[:, :, -1].mean(0))
  return rows


def _program_jobs(switched, sweeps, phis_S, keys_S, student_params, diagnostics_xy, projections,
                  config) -> list:
  """Zero-argument jobs that compile the study's programs for credit parameters `phis_S` (one
  per credit of `switched`, stacked over seeds; arrays or shapes)."""
  switch_S = estimators.switch_params(0, phis_S)
  phi = estimators.pick_seed(switch_S, 0)
  (x, y), key = diagnostics_xy, keys_S[0]
  quality = diagnostics.quality_program(switched, config.diagnostics)
  updates = update_diagnostics.program(switched, config.diagnostics, config.phase6.update_embed,
                                       with_quality=False)
  return [lambda: sweeps.compile(switched, switch_S, keys_S),
          lambda: quality.lower(phi, student_params, x, y, key).compile(),
          lambda: updates.lower(*update_diagnostics.program_args(
              student_params, x, y, phi, key, "inner_product", None, projections)).compile()]


def correlation_rows(rows_at_k: list[dict], config) -> list[dict]:
  """Spearman's rho between hidden-layer Gamma and Delta loss after k steps, per snapshot, rule
  (eta), lr and Delta loss, over the dial's points and over the other credits (the real ones
  and the controls `zero`), with a bootstrap interval over seeds (`kind: "correlation"` rows);
  with several snapshots also its mean over snapshots with a 95% t-interval over them and
  on how many snapshots its sign holds (`snapshot: "all"`)."""
  generator = np.random.default_rng([config.seed, rng.name_id("phase6/correlation")])
  groups: dict[tuple, dict] = {}
  for row in rows_at_k:
    over = "dial" if row["credit"] == "oracle_dial" else "credits"
    point = (row["credit"], row.get("M"), row.get("dial_gamma"))
    key = (over, row["rule"], row.get("eta"), row["lr"], row["snapshot"])
    groups.setdefault(key, {}).setdefault(point, {})[row["seed"]] = row
  out = []
  for (over, rule, eta, lr, snapshot), points in groups.items():
    if len(points) < 3:  # a rank correlation of two points says nothing
      continue
    seeds = sorted(set.intersection(*(set(p) for p in points.values())))
    for delta in DELTAS:
      gamma = [[points[pt][s]["gamma"] for s in seeds] for pt in points]
      change = [[points[pt][s][delta] for s in seeds] for pt in points]
      out.append(dict(kind="correlation", over=over, rule=rule, eta=eta, lr=lr, k=config.phase6.k,
                      delta=delta, seed="all", snapshot=snapshot,
                      **stats.bootstrap_spearman(gamma, change, generator)))
  return out + _correlations_over_snapshots(out)


def _correlations_over_snapshots(per_snapshot: list[dict]) -> list[dict]:
  groups: dict[tuple, list[dict]] = {}
  for c in per_snapshot:
    groups.setdefault(tuple(c[k] for k in ("over", "rule", "eta", "lr", "delta")), []).append(c)
  out = []
  for members in groups.values():
    if len(members) < 2:
      continue
    values = [c["spearman"] for c in members if np.isfinite(c["spearman"])]
    if not values:
      continue
    interval = stats.mean_interval(values)
    out.append(dict({k: members[0][k] for k in ("kind", "over", "rule", "eta", "lr", "k",
                                                   "delta", "num_points", "num_seeds")},
                    seed="all", snapshot="all", spearman=interval["mean"],
                    # A rank correlation lies in [-1, 1]; so does its interval.
                    ci_low=None if interval["ci_low"] is None else max(interval["ci_low"], -1.0),
                    ci_high=None if interval["ci_high"] is None else min(interval["ci_high"], 1.0),
                    num_snapshots=len(values),
                    sign_holds=stats.sign_holds(values, interval["mean"])))
  return out


def _plot(workdir: str, summary: list[dict], final: list[dict], variants, p) -> None:
  """The study's figures, drawn in parallel processes (`plots.draw`): rows carry their labels."""
  labelled = lambda rows: [dict(r, plot_label=common.credit_label(r)) for r in rows]
  summary, final = labelled(summary), labelled(final)
  label = operator.itemgetter("plot_label")
  figures = []
  for rule, eta in dict.fromkeys(variants):
    tag = rule if eta is None else f"{rule}_eta{eta:g}"
    at_rule = [s for s in final if s["rule"] == rule and s.get("eta") == eta]
    figures += [
        functools.partial(plots.lines, at_rule,
                          os.path.join(workdir, f"delta_loss_vs_lr_{tag}.png"), x="lr",
                          y="delta_loss_update", label=label, xlog=True,
                          title=f"{tag}: delta loss after {p.k} steps (update batches)"),
        functools.partial(plots.delta_vs_gamma, at_rule,
                          os.path.join(workdir, f"delta_loss_vs_gamma_{tag}.png"),
                          deltas=DELTAS, dial="oracle_dial", label=label,
                          title=f"{tag}: delta loss after {p.k} steps against Gamma")]
  smallest = min(p.lrs)
  figures.append(functools.partial(
      plots.lines, [s for s in summary if s["rule"] == variants[0][0] and s["lr"] == smallest
                    and s.get("eta") == variants[0][1]],
      os.path.join(workdir, "delta_loss_vs_k.png"), x="k", y="delta_loss_update",
      label=label, title=f"{variants[0][0]}, lr={smallest:g}: delta loss vs k"))
  plots.draw(figures)
