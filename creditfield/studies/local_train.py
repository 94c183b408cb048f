"""Local training from scratch: credit x rule x seeds, each student trained from random init.

For each credit a training step is one compiled chunk (`from_scratch`) in which every
rule and seed trains, vmapped (`student_groups`; with several compile threads the later
credits' programs compile while the earlier train). Every `eval_every` steps the host measures test loss and
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
import ml_collections
import numpy as np

from creditfield import bp_training
from creditfield import estimator_training
from creditfield import estimators
from creditfield import from_scratch
from creditfield import rng
from creditfield import rules as rules_lib
from creditfield import seeds as seeds_lib
from creditfield import stats
from creditfield import student as student_lib
from creditfield import training_loop
from creditfield import update_diagnostics
from creditfield.infra import checkpoints
from creditfield.infra import compilation
from creditfield.infra import flops
from creditfield.infra import outputs
from creditfield.infra import plots
from creditfield.infra import resumable
from creditfield.infra import sharding
from creditfield.studies import common

OPTIONS = ("correction", "correction_M", "correction_directions", "correction_layers", "radial",
           "size", "block_credit")
TABLE = ("credit", "M", *OPTIONS, "update_embed", "rule", "eta",
         "test_accuracy", "test_loss", "best_test_accuracy", "gamma", "update_alignment",
         "update_alignment_embed", "norm_ratio", "stream_norm", "radial_fraction", "ms_per_update",
         "forward_equivalents")
# A row's identity: the credit with its options, the rule, the run length.
GROUP = ("credit", "M", *OPTIONS, "update_embed", "rule", "eta", "steps")
LOCAL_EVAL = "local_eval"  # the phase of an evaluation record in metrics.jsonl
FINAL_METRICS = ("test_accuracy", "test_loss", "best_test_accuracy", "gamma",
                 *update_diagnostics.HEADLINES, "ms_per_update", "train_seconds",
                 "forward_equivalents", "gflop_per_update")
# Which diagnostic predicts training: Spearman's rho over the grid of credit x rule x options
# between the final headline and each of these (at the end of training).
PREDICTORS = ("gamma", "update_alignment", "update_alignment_embed", "norm_ratio",
              "log_norm_ratio_distance", "radial_fraction_abs")


def _headline(task: str) -> str:
  return "test_accuracy" if task == "classification" else "test_loss"


def option_tags(credit_config) -> dict:
  """The credit options a row carries (the correction's settings only where it is on)."""
  options = estimators.options_of(credit_config, credit_config.M)
  tags = {k: getattr(options, k) for k in OPTIONS}
  if options.correction == "none":
    tags.update(correction_M=None, correction_directions=None, correction_layers=None)
  return tags


def update_cost(step_fn, state, data, spec, params, x) -> dict:
  """Matmul FLOPs of one student update (estimator updates included) and their ratio
  to one forward pass of the batch."""
  step_flops = flops.matmul_flops(step_fn, data, state, jnp.int32(0))
  forward_flops = flops.matmul_flops(lambda p, x: student_lib.forward(spec, p, x)[1], params, x)
  return {"gflop_per_update": step_flops / 1e9,
          "forward_equivalents": step_flops / forward_flops}


def initial_state(r, est, init_fn, seeds):
  """Each seed's initial state, shared by every rule of a credit: the student's init (the same
  for every credit) and, with `estimator_warmup_steps`, a learned estimator trained on that
  initial student for those steps (its own schedule) before the student moves, its online
  optimiser fresh."""
  cfg, x_train, y_train = r.config.local_train, r.dataset.x_train, r.dataset.y_train
  k_init = seeds_lib.keys(lambda seed: rng.stream(seed, "local_train", "init"), seeds)
  state_S = jax.vmap(lambda k: init_fn(k, x_train, y_train))(k_init)
  if not est.learned or not cfg.estimator_warmup_steps:
    return state_S
  warm_cfg = ml_collections.ConfigDict(r.config.estimator.to_dict())
  warm_cfg.steps = cfg.estimator_warmup_steps
  keys = seeds_lib.keys(lambda seed: rng.stream(seed, "local_train", "estimator_warmup"), seeds)
  phi_S = estimator_training.train_seeds(
      est, state_S.params, x_train, y_train, warm_cfg, keys,
      [dict(credit=est.name, seed=seed, phase="estimator_warmup") for seed in seeds],
      vmapped=r.config.vmap_seeds, on_metrics=r.metrics, skip_nonfinite=r.config.skip_nonfinite,
      image_shape=r.dataset.image_shape, student_per_seed=True)
  online_cfg = from_scratch.online_estimator_config(r.config.estimator, cfg)
  return state_S.replace(estimator=jax.vmap(
      lambda phi: estimator_training.init_state(online_cfg, phi))(phi_S))


def student_groups(rule_list, num_seeds: int, vmap_rules: bool, vmap_seeds: bool):
  """The students (rule, seed index) of a credit, grouped into the programs that train them
  together: every rule and seed in one (both vmapped), one per rule (seeds vmapped), one per
  seed (rules vmapped) or one per student."""
  students = [(rule, i) for rule in rule_list for i in range(num_seeds)]
  together = lambda a, b: ((vmap_rules or a[0] == b[0]) and (vmap_seeds or a[1] == b[1]))
  groups: list[list] = []
  for student in students:
    group = next((g for g in groups if together(g[0], student)), None)
    if group is None:
      groups.append([student])
    else:
      group.append(student)
  return groups


def _group_program(step_fn, state_S, members, keys, tags, x_train, y_train, projections):
  """(step function, state, data) that train the students `members` ((rule, seed index)) of a
  credit together: their seeds' initial states taken from `state_S` (arrays, or shapes to
  compile for), each with its seed's key, its rule and eta. One student: the step itself."""
  seed_index = np.array([i for _, i in members])
  rule_index = np.array([rules_lib.rule_index(rule) for rule, _ in members], np.int32)
  eta = np.array([tags[m]["eta"] or 0.0 for m in members], np.float32)
  # The training loop donates its state: each group trains its own copy (a gather).
  state = seeds_lib.take(state_S, seed_index)
  data = from_scratch.StepData(x_train, y_train, keys[seed_index], jnp.asarray(rule_index),
                               jnp.asarray(eta), projections)
  if len(members) > 1:
    return from_scratch.students_step(step_fn), state, data
  return step_fn, seeds_lib.pick(state, 0), data._replace(
      key=data.key[0], rule_index=data.rule_index[0], eta=data.eta[0])


def _keys(seeds):
  """Each seed's local-training stream, stacked."""
  return seeds_lib.keys(lambda seed: rng.stream(seed, "local_train"), seeds)


def train_students(r, est, state_S, step_fn, rule_list, seeds, projections, dx, dy, tags):
  """Trains one student per rule and seed from its seed's initial state `state_S`
  (`initial_state`), the students of a `student_groups` group in one vmapped program; returns
  (final rows, eval curve records), one final row per student, rules outer and seeds inner,
  `tags[(rule, i)]` the row tags of rule `rule` and seed `seeds[i]`. A rule's student of a
  seed sees that seed's batches whatever else trains beside it."""
  cfg = r.config.local_train
  eval_spec = r.spec.with_guard(False)
  keys = _keys(seeds)
  k_quality = jax.vmap(lambda k: rng.stream(k, "quality"))(keys)
  groups = student_groups(rule_list, len(seeds), cfg.vmap_rules, r.config.vmap_seeds)
  curves = {}
  for members in groups:
    stacked = len(members) > 1
    fn, state, data = _group_program(step_fn, state_S, members, keys, tags, r.dataset.x_train,
                                     r.dataset.y_train, projections)
    group_rules = "+".join(dict.fromkeys(rule for rule, _ in members))
    group_seeds = "+".join(str(seeds[i]) for i in dict.fromkeys(i for _, i in members))
    # Saved at every evaluation and marked finished at the end: a rerun resumes here.
    unit = resumable.Unit(os.path.join(r.workdir, "local_train", f"{est.name}__{group_rules}",
                                       f"seeds{group_seeds}"))
    names = [f"{rule}/{i}" for rule, i in members]
    finished = unit.finished()
    if finished is not None:
      curves.update({m: finished["curves"][n] for m, n in zip(members, names)})
      continue
    start, resumed_state, extra = unit.resume(state)
    if resumed_state is not None:
      state = resumed_state
      curves.update({m: extra["curves"][n] for m, n in zip(members, names)})
    else:
      curves.update({m: [] for m in members})
    view = (lambda tree, j: seeds_lib.pick(tree, j)) if stacked else (lambda tree, j: tree)
    clock = {"last": time.perf_counter()}
    of_members = lambda members=members, names=names: {n: curves[m]
                                                       for m, n in zip(members, names)}

    def on_chunk(first_step, metrics, state, members=members, view=view, clock=clock,
                 stacked=stacked, unit=unit, of_members=of_members):
      seconds = (time.perf_counter() - clock["last"]) / len(members)  # per student
      step = first_step + len(metrics["loss"])
      for j, (rule, i) in enumerate(members):
        params = view(state.params, j)
        ev = bp_training.evaluate(eval_spec, params, r.dataset.x_test, r.dataset.y_test)
        phi = estimator_training.credit_params(view(state.estimator, j), r.config.estimator)
        k_eval = rng.step_key(k_quality[i], step)
        quality, updates = update_diagnostics.evaluate(
            est, params, dx, dy, phi, k_eval, r.config.diagnostics, rule,
            tags[(rule, i)]["eta"], projections,
            cfg.update_embed)
        gamma, updates = quality["gamma"], update_diagnostics.flat(updates)
        student_metrics = seeds_lib.chunk_metrics(metrics, j) if stacked else metrics
        curve = curves[(rule, i)]
        curve.append(dict(
            tags[(rule, i)], phase=LOCAL_EVAL, step=step,
            train_loss=float(np.mean(student_metrics["loss"])), chunk_seconds=seconds,
            gamma=float(np.mean(gamma[:-1])),
            **{f"test_{k}": v for k, v in ev.items()},
            **{f"gamma_l{l}": float(g) for l, g in enumerate(gamma)}, **updates,
            **{k: float(np.mean(v)) for k, v in student_metrics.items() if k != "loss"}))
        # Logged as soon as its training seconds are known (the first record waits for the
        # second chunk), so a run stopped mid-way keeps its curve so far.
        if len(curve) >= 2 or step >= cfg.steps:
          pending = [c for c in curve if "train_seconds" not in c]
          seconds_so_far = train_seconds([record["chunk_seconds"] for record in curve])
          for record, t in zip(curve, seconds_so_far):
            record["train_seconds"] = t
          r.metrics(pending)
      if step < cfg.steps:
        unit.save(step, state, dict(curves=of_members()))
      clock["last"] = time.perf_counter()

    training_loop.run(fn, state, data, start=start, num_steps=cfg.steps,
                      chunk_size=cfg.eval_every, on_chunk=on_chunk,
                      on_stop=lambda step, state, unit=unit: unit.directory,
                      what=f"local {est.name} rules {group_rules} seeds {group_seeds}")
    unit.finish(dict(curves=of_members()))
  students = [(rule, i) for rule in rule_list for i in range(len(seeds))]
  finals = [_final_row(cfg, tags[m], curves[m], r.spec.task) for m in students]
  return finals, [record for m in students for record in curves[m]]


def train_seconds(chunk_seconds: list[float]) -> list[float]:
  """Training wall time at the end of each chunk: evaluation excluded, and the first chunk,
  which also compiles when a credit runs for the first time, counted as at most the second."""
  first = min(chunk_seconds[0], chunk_seconds[1]) if len(chunk_seconds) > 1 else chunk_seconds[0]
  return [float(t) for t in np.cumsum([first] + chunk_seconds[1:])]


def _final_row(cfg, tags, curve, task) -> dict:
  """A seed's final row, from its curve (which carries `train_seconds`)."""
  seconds = curve[-1]["train_seconds"]
  metric = _headline(task)
  last = curve[-1]
  diagnostics_at_end = {k: v for k, v in last.items()
                        if k.startswith(update_diagnostics.PER_LAYER + ("gamma_l",))}
  final = dict(tags, test_loss=last["test_loss"], gamma=last["gamma"], **diagnostics_at_end,
               train_seconds=seconds, ms_per_update=1e3 * seconds / cfg.steps)
  if metric == "test_accuracy":
    best = max(c[metric] for c in curve)
    final.update(test_accuracy=curve[-1]["test_accuracy"], best_test_accuracy=best)
  return final


def report_markdown(summary: list[dict]) -> str:
  final = [r for r in summary if r.get("kind") != "correlation"]
  correlations = [r for r in summary if r.get("kind") == "correlation"]
  value = _headline(_task(final))
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
           "Update alignment at the end of training (cosine of each block's update with "
           "backprop's on the same batch, mean over blocks; the embedding apart below):", "",
           outputs.pivot_markdown(final, "credit_M", "rule_eta", "update_alignment"), "",
           "Update alignment of the embedding (trained with a_0; 0 when it is frozen):", "",
           outputs.pivot_markdown(final, "credit_M", "rule_eta", "update_alignment_embed"), "",
           "Norm ratio ||a_l|| / ||g_l|| at the end of training (median over samples, mean over "
           "hidden layers):", "",
           outputs.pivot_markdown(final, "credit_M", "rule_eta", "norm_ratio"), "",
           "Residual-stream norm ||h_L|| at the end of training:", "",
           outputs.pivot_markdown(final, "credit_M", "rule_eta", "stream_norm"), "",
           "Radial fraction <a_l, h^_l> / ||a_l|| of the credit (signed; mean over hidden "
           "layers):", "",
           outputs.pivot_markdown(final, "credit_M", "rule_eta", "radial_fraction"), "",
           "Cost of one student update (estimator updates included; ms: mean over rules):", "",
           outputs.markdown_table(per_credit, ("credit_M",) + cost)]
  if correlations:
    parts += ["", f"Which diagnostic predicts training: Spearman's rho of the final {value} with "
              "each diagnostic at the end of training, over the credit x rule x options grid "
              "(seed means; 95% bootstrap interval over seeds):", "",
              "| diagnostic | rho | interval | points | seeds |", "|---|---|---|---|---|"]
    parts += [f"| {c['predictor']} | {c['spearman']:.2f} | [{c['ci_low']:.2f}, "
              f"{c['ci_high']:.2f}] | {c['num_points']} | {c['num_seeds']} |"
              for c in correlations]
  return "\n".join(parts) + "\n"


def summarize(rows: list[dict]) -> list[dict]:
  """Mean ± std over seeds of every final metric, per credit (with its options), rule and
  eta; then the `kind: "correlation"` rows of `predictor_correlations`."""
  return outputs.summarize(rows, GROUP, FINAL_METRICS) + predictor_correlations(rows)


def predictor_correlations(rows: list[dict], seed: int = 0) -> list[dict]:
  """Spearman's rho over the grid's points (credit x rule x options) between the final
  headline and each of `PREDICTORS`, with a bootstrap over the seeds. The points are those
  with every seed of the grid (a single-seed probe beside a 3-seed grid is left out rather
  than cutting the bootstrap to one seed), or, where fewer than 3 have, every point over the
  seeds all have. `log_norm_ratio_distance` is |log norm_ratio|: how far the credit's size is
  from the true one, either way. Points the headline or the predictor is missing for are
  left out."""
  value = _headline(_task(rows))
  points: dict[tuple, dict] = {}
  for r in rows:
    if r.get(value) is None or r.get("norm_ratio") is None:
      continue
    row = dict(r, log_norm_ratio_distance=abs(float(np.log(max(r["norm_ratio"], 1e-30)))))
    points.setdefault(tuple(r.get(k) for k in GROUP), {})[r["seed"]] = row
  every_seed = set().union(*points.values())
  complete = {k: p for k, p in points.items() if set(p) == every_seed}
  if len(complete) >= 3:
    points = complete
  seeds = sorted(set.intersection(*(set(p) for p in points.values()))) if points else []
  if len(points) < 3 or not seeds:
    return []
  generator = np.random.default_rng([seed, rng.name_id("local_train/correlation")])
  out = []
  for predictor in PREDICTORS:
    x = np.array([[p[s][predictor] for s in seeds] for p in points.values()])
    y = np.array([[p[s][value] for s in seeds] for p in points.values()])
    out.append(dict(kind="correlation", seed="all", predictor=predictor, of=value,
                    **stats.bootstrap_spearman(x, y, generator)))
  return out


def _task(rows: list[dict]) -> str:
  return "classification" if any("test_accuracy" in r for r in rows) else "regression"


def plot(workdir: str, summary: list[dict], records: list[dict]) -> None:
  """One figure per (metric, x axis), a panel per rule, a line per credit, from the
  evaluation records of metrics.jsonl (mean ± std over seeds)."""
  curves = [r for r in records if r.get("phase") == LOCAL_EVAL]
  summary = [r for r in summary if r.get("kind") != "correlation"]
  value = _headline(_task(summary))
  over_steps = ("gamma", "update_alignment", "update_alignment_embed", "norm_ratio",
                "stream_norm", "radial_fraction")
  curve_summary = outputs.summarize(curves, GROUP + ("step",),
                                    (value, "train_seconds") + over_steps)
  rules = tuple(dict.fromkeys(r["rule"] for r in summary))
  panels = {rule: [s for s in curve_summary if s["rule"] == rule] for rule in rules}
  for y, x in ((value, "step"), (value, "train_seconds")) + tuple((y, "step") for y in over_steps):
    plots.line_panels(panels, os.path.join(workdir, f"{y}_vs_{x}.png"), x=x, y=y,
                      label=common.credit_label, log_y=y in ("stream_norm", "norm_ratio"))


def compile_jobs(r, est, step_fn, state_shape, rule_list, seeds, projections, dx, dy, tags):
  """Zero-argument jobs that compile what `train_students` runs for one credit, without
  training: a chunk for every size of student group, and the evaluation's program. Lowered
  for the states' shapes (`state_shape`: one student's, placed as the study places them) and
  the real data, so they are the programs the training calls."""
  cfg = r.config.local_train
  state_S = sharding.replicated_shapes(state_shape, (len(seeds),))
  keys = _keys(seeds)
  steps = jnp.arange(cfg.eval_every)
  programs = {}  # group size -> (step function, state, data): groups of one size share one
  for members in student_groups(rule_list, len(seeds), cfg.vmap_rules, r.config.vmap_seeds):
    programs.setdefault(len(members), _group_program(
        step_fn, state_S, members, keys, tags, r.dataset.x_train, r.dataset.y_train,
        projections))
  jobs = [lambda fn=fn, state=state, data=data:
          training_loop.jitted_chunk(fn).lower(state, steps, data).compile()
          for fn, state, data in programs.values()]
  params = sharding.replicated_shapes(state_shape.params)
  phi = sharding.replicated_shapes(
      estimator_training.credit_params(state_shape.estimator, r.config.estimator))
  k_eval = rng.step_key(rng.stream(keys[0], "quality"), cfg.eval_every)
  evaluation = update_diagnostics.program(est, r.config.diagnostics, cfg.update_embed, True)
  jobs.append(lambda: evaluation.lower(*update_diagnostics.program_args(
      params, dx, dy, phi, k_eval, rule_list[0], 0.0, projections)).compile())
  return jobs


def _tags(config, name, rule_list, seeds) -> dict:
  """The row tags of every student (rule, seed index) of credit `name`."""
  cfg = config.local_train
  return {(rule, i): dict(credit=name, rule=rule,
                          eta=float(cfg.eta) if rule in rules_lib.USES_ETA else None,
                          seed=seed, steps=cfg.steps, **option_tags(config.credit),
                          update_embed=bool(cfg.update_embed),
                          **({"M": config.credit.M} if name in estimators.USES_M else {}))
          for rule in rule_list for i, seed in enumerate(seeds)}


def run(config, workdir: str) -> dict:
  names = estimators.parse_names(config.credit.names)
  cfg = config.local_train
  rule_list = rules_lib.parse_rules(cfg.rules)
  r = common.start(config, workdir)
  spec = r.spec
  projections = rules_lib.projections(rng.stream(config.seed, "local_train", "projections"),
                                      spec)
  dx, dy = common.diagnostics_batch(r, config.seed)
  seeds = seeds_lib.seed_list(config)
  credits = []
  for name in names:
    est = estimators.make(name, spec, config.credit)
    step_fn = from_scratch.make_train_step(est, cfg, config.estimator,
                                           image_shape=r.dataset.image_shape,
                                           skip_nonfinite=config.skip_nonfinite)
    init_fn = from_scratch.make_init(est, cfg, config.estimator)
    # Shapes suffice to count FLOPs and to compile: no state is built for them.
    state_shape = jax.eval_shape(init_fn, jax.random.PRNGKey(0), r.dataset.x_train,
                                 r.dataset.y_train)
    credits.append((name, est, step_fn, init_fn, state_shape,
                    _tags(config, name, rule_list, seeds)))
  # With several compile threads every credit's programs compile in the background while
  # the credits before it train (one thread, 2 cores: each compiles its own when it starts).
  compiled = [[] for _ in credits]
  if compilation.background_workers() > 1:
    jobs = [compile_jobs(r, est, step_fn, state_shape, rule_list, seeds, projections, dx, dy,
                         tags) for _, est, step_fn, _, state_shape, tags in credits]
    futures = iter(compilation.in_background([job for credit in jobs for job in credit]))
    compiled = [[next(futures) for _ in credit] for credit in jobs]
  rows, curves = [], []
  for (name, est, step_fn, init_fn, state_shape, tags), programs in zip(credits, compiled):
    cost = update_cost(step_fn, state_shape, (r.dataset.x_train, r.dataset.y_train,
                                              jax.random.PRNGKey(0), jnp.int32(0),
                                              jnp.float32(0.0), projections),
                       spec, state_shape.params, r.dataset.x_train[:cfg.batch_size])
    state = initial_state(r, est, init_fn, seeds)
    for program in programs:
      program.result()
    finals, curve = train_students(r, est, state, step_fn, rule_list, seeds, projections,
                                   dx, dy, tags)
    rows += [dict(final, **cost) for final in finals]
    curves += curve
    for rule in rule_list:
      logging.info("local training %s %s: %s", name, rule,
                   [f.get("test_accuracy") for f in finals if f["rule"] == rule])
    # Results so far, after every credit: a long run that is stopped keeps its table.
    summary, meta = _write(r, rows)
  plot(workdir, summary, curves)
  print(f"Local training from scratch, {cfg.steps} steps ({r.dataset.name}):")
  print(outputs.text_table([s for s in summary if s.get("kind") != "correlation"], TABLE))
  r.metrics.close()
  return {"rows": summary + rows, "meta": meta}


def _write(r, rows: list[dict]) -> tuple[list[dict], dict]:
  summary = summarize(rows)
  meta = outputs.run_meta(r.dataset, experiment="local_train", wall_seconds=r.stopwatch.seconds(),
                          student=checkpoints.spec_to_json(r.spec),
                          steps=r.config.local_train.steps,
                          flops="matmul FLOPs of one student update, counted from its jaxpr",
                          vmap_seeds=r.config.vmap_seeds,
                          estimator_warmup_steps=r.config.local_train.estimator_warmup_steps,
                          vmap_rules=r.config.local_train.vmap_rules,
                          ms_per_update="per student: when students (rules x seeds) train "
                                        "together, the chunk's time over their number",
                          train_seconds="training chunks only; evaluation and compilation "
                                        "excluded")
  outputs.write_results(r.workdir, summary + rows, meta, columns=TABLE)
  outputs.write_text(os.path.join(r.workdir, "tables.md"), report_markdown(summary))
  return summary, meta
