"""Checks a config before any work, so a bad value fails in seconds with one clear message."""
import jax

from creditfield import credit_net
from creditfield import datasets
from creditfield import estimators
from creditfield import from_scratch
from creditfield import optimizers
from creditfield import perturb
from creditfield import rules
from creditfield import sampling
from creditfield.infra import checkpoints
from creditfield.infra import errors


# What jax.default_matmul_precision takes (run.py), and the dot-algorithm presets.
MATMUL_PRECISIONS = ("default", "high", "highest", "bfloat16", "tensorfloat32", "float32") + tuple(
    p.name for p in jax.lax.DotAlgorithmPreset if p.name != "DEFAULT")


# The precisions that keep fp32 matmuls ("" = the run's).
FP32_PRECISIONS = ("", "highest", "float32", "F32_F32_F32")


class ConfigError(errors.UserError):
  """A config value is out of range or names something that does not exist."""


def _require(ok: bool, message: str) -> None:
  if not ok:
    raise ConfigError(message)


def _one_of(value, valid, key: str) -> None:
  _require(value in valid, f"config.{key}={value!r} is not valid; expected one of "
                           f"{', '.join(map(str, valid))}.")


def validate(config) -> None:
  """Raises ConfigError naming the first inconsistent value of `config`."""
  _require(config.num_seeds >= 1, f"config.num_seeds must be >= 1, got {config.num_seeds}.")
  _require(0 <= config.seed and config.seed + config.num_seeds <= 2 ** 63,
           f"config.seed must be >= 0 and seed + num_seeds - 1 below 2^63 (JAX's key range), got "
           f"seed {config.seed} with {config.num_seeds} seeds.")
  _one_of(config.matmul_precision, MATMUL_PRECISIONS, "matmul_precision")
  if config.experiment == "bench":
    _one_of(config.bench.targets, perturb.METHODS, "bench.targets")
    return
  _one_of(config.data.name, datasets.DATASETS, "data.name")
  _require(not (config.data.name == "synthetic" and config.data.dir),
           f"config.data.dir={config.data.dir!r} is set, but the data is the embedded synthetic "
           "task, which reads no folder: drop --config.data.dir, or drop the `synthetic` arg "
           "to run on CIFAR-10.")
  syn = config.data.synthetic
  if config.data.name == "synthetic":
    _require(syn.task != "classification" or syn.num_outputs >= 2,
             f"config.data.synthetic.num_outputs must be >= 2 for classification (one class "
             f"makes every accuracy 1.0), got {syn.num_outputs}.")
    batches = {"snapshot.batch_size": config.snapshot.batch_size,
               "estimator.batch_size": config.estimator.batch_size}
    if "local_train" in config:
      batches["local_train.batch_size"] = config.local_train.batch_size
    for key, size in batches.items():
      _require(size <= syn.num_train, f"config.{key}={size} is larger than the training set "
                                      f"(config.data.synthetic.num_train={syn.num_train}).")
    if "phase6" in config:
      _require(config.phase6.heldout_size <= syn.num_test,
               f"config.phase6.heldout_size={config.phase6.heldout_size} is larger than the "
               f"test split (config.data.synthetic.num_test={syn.num_test}).")
  for key in ("depth", "width", "expansion"):
    value = config.student[key]
    _require(value >= 1, f"config.student.{key} must be >= 1, got {value}.")
  s = config.snapshot
  _require(s.lr > 0, f"config.snapshot.lr must be > 0, got {s.lr}.")
  _require(s.steps >= 0, f"config.snapshot.steps must be >= 0, got {s.steps}.")
  for key in ("batch_size", "log_every", "eval_every", "checkpoint_every"):
    _require(s[key] >= 1, f"config.snapshot.{key} must be >= 1, got {s[key]}.")
  _one_of(s.augment, sampling.AUGMENTATIONS, "snapshot.augment")
  _check_snapshots(config)
  c = config.credit
  names = estimators.parse_names(c.names)
  _require("oracle_dial" not in names or "phase6" in config,
           "oracle_dial is a Phase 6 control (its cosines are config.phase6.dial_gammas); "
           f"remove it from config.credit.names of {config.experiment}.")
  for m in (c.M,) + tuple(c.M_values):
    _require(m >= 1, f"The number of directions M must be >= 1, got {m} "
                     "(config.credit.M / config.credit.M_values).")
  _one_of(c.conditioning, credit_net.CONDITIONINGS, "credit.conditioning")
  _one_of(c.dni.conditioning, credit_net.CONDITIONINGS, "credit.dni.conditioning")
  _one_of(c.radial, estimators.RADIAL, "credit.radial")
  _one_of(c.size, estimators.SIZES, "credit.size")
  _one_of(c.correction, estimators.CORRECTIONS, "credit.correction")
  _one_of(c.correction_directions, perturb.DIRECTIONS, "credit.correction_directions")
  _one_of(c.matmul_precision, ("",) + MATMUL_PRECISIONS, "credit.matmul_precision")
  _require(c.matmul_precision in FP32_PRECISIONS or c.targets == "jvp"
           or "vector_field" not in names,
           f"config.credit.matmul_precision={c.matmul_precision} with credit.targets={c.targets}: "
           "finite-difference targets cancel below fp32 (TF32 moved them 4.8% on the H200); "
           "use --config.credit.targets=jvp, or keep the estimator in fp32.")
  _one_of(c.correction_layers, estimators.CORRECTION_LAYERS, "credit.correction_layers")
  _one_of(c.block_credit, estimators.BLOCK_CREDITS, "credit.block_credit")
  _require(c.correction_M >= 0, f"config.credit.correction_M must be >= 0 (0: the credit's M), "
                                f"got {c.correction_M}.")
  width = config.student.width
  for key, kind, ms in (("directions", c.directions, (c.M,) + tuple(c.M_values)),
                        ("correction_directions", c.correction_directions,
                         (c.correction_M or c.M,))):
    _require(kind != "orthogonal" or max(ms) <= width,
             f"config.credit.{key}=orthogonal takes at most config.student.width={width} "
             f"directions, got {max(ms)}.")
  for key in ("vector_field", "scalar_bridge", "dni"):
    hidden = tuple(c[key].hidden)
    _require(len(hidden) >= 1 and all(int(w) >= 1 for w in hidden),
             f"config.credit.{key}.hidden must be one or more widths >= 1, got {hidden}.")
  _one_of(c.embedding, credit_net.LAYER_EMBEDDINGS, "credit.embedding")
  _one_of(c.normalization, credit_net.NORMALIZATIONS, "credit.normalization")
  _one_of(c.vector_field.regression, estimators.REGRESSIONS, "credit.vector_field.regression")
  _require(c.vector_field.scale_floor >= 0 and c.scalar_bridge.scale_floor >= 0
           and c.dni.scale_floor >= 0 and c.output_init >= 0,
           "config.credit.vector_field.scale_floor, scalar_bridge.scale_floor, dni.scale_floor "
           f"and output_init must be >= 0, got {c.vector_field.scale_floor}, "
           f"{c.scalar_bridge.scale_floor}, {c.dni.scale_floor}, {c.output_init}.")
  _require(c.time_dim >= 2 and c.time_dim % 2 == 0,
           f"config.credit.time_dim must be an even number >= 2, got {c.time_dim}.")
  v, b = c.vector_field, c.scalar_bridge
  _require(v.contrastive >= 0 and v.smoothness >= 0 and v.contrastive_tau > 0,
           "config.credit.vector_field needs contrastive >= 0, smoothness >= 0 and "
           f"contrastive_tau > 0; got {v.contrastive}, {v.smoothness}, {v.contrastive_tau}.")
  _require(b.num_noise >= 1 and b.tau > 0 and b.sigma >= 0,
           "config.credit.scalar_bridge needs num_noise >= 1, tau > 0 and sigma >= 0; got "
           f"{b.num_noise}, {b.tau}, {b.sigma}.")
  _one_of(c.targets, perturb.METHODS, "credit.targets")
  _one_of(c.forward_gradient.targets, perturb.METHODS, "credit.forward_gradient.targets")
  _one_of(c.directions, perturb.DIRECTIONS, "credit.directions")
  _require(c.fd_eps > 0, f"config.credit.fd_eps must be > 0, got {c.fd_eps}.")
  e = config.estimator
  _require(e.lr > 0, f"config.estimator.lr must be > 0, got {e.lr}.")
  _one_of(e.schedule, optimizers.SCHEDULES, "estimator.schedule")
  _require(e.steps >= 0 and e.batch_size >= 1,
           f"config.estimator.steps must be >= 0 and batch_size >= 1, got {e.steps}, "
           f"{e.batch_size}.")
  _require(e.grad_clip >= 0, f"config.estimator.grad_clip must be >= 0 (0: no clipping), got "
                            f"{e.grad_clip}; a negative clip would flip the update's sign.")
  _require(e.log_every >= 1, f"config.estimator.log_every must be >= 1, got {e.log_every}.")
  for section in ("snapshot", "estimator") + (("local_train",) if "local_train" in config else ()):
    warmup = config[section].warmup_steps
    _require(warmup >= 0, f"config.{section}.warmup_steps must be >= 0, got {warmup}.")
  d = config.diagnostics
  _require(d.batch_size >= 2 and d.num_directions >= 1 and d.sigma > 0 and d.nudge_eps > 0,
           "config.diagnostics needs batch_size >= 2 and num_directions >= 1 (Gamma and rho "
           "are means and correlations over them), sigma > 0 and nudge_eps > 0; got "
           f"{d.batch_size}, {d.num_directions}, {d.sigma}, {d.nudge_eps}.")
  _require(0 <= e.ema_decay < 1, f"config.estimator.ema_decay must be in [0, 1), got "
                                 f"{e.ema_decay}.")
  _one_of(e.credit_params, ("ema", "raw"), "estimator.credit_params")
  _one_of(e.augment, sampling.AUGMENTATIONS, "estimator.augment")
  if "phase6" in config:
    p = config.phase6
    rules.parse_rules(p.rules)
    _one_of(p.optimizer, optimizers.PHASE6, "phase6.optimizer")
    _require(p.k >= 1, f"config.phase6.k must be >= 1, got {p.k}.")
    _require(p.batch_size >= 1 and p.heldout_size >= 1,
             f"config.phase6.batch_size and heldout_size must be >= 1 (delta losses are means "
             f"over them), got {p.batch_size}, {p.heldout_size}.")
    _require(all(0 <= g <= 1 for g in p.dial_gammas) and
             ("oracle_dial" not in names or len(p.dial_gammas) > 0),
             f"config.phase6.dial_gammas must be cosines in [0, 1] (at least one when "
             f"oracle_dial is a credit), got {tuple(p.dial_gammas)}.")
    _require(len(p.lrs) > 0 and all(lr > 0 for lr in p.lrs),
             f"config.phase6.lrs must be positive learning rates, got {p.lrs}.")
    for eta in tuple(p.etas) + (p.stretch_eta,):
      _require(0 < eta <= 10, f"config.phase6 eta values must lie in (0, 10], got {eta} "
                              "(config.phase6.etas / stretch_eta).")
    _require(isinstance(p.compile_groups, int) and p.compile_groups >= 0,
             f"config.phase6.compile_groups must be an integer >= 0 (0: one group per background "
             f"compile thread), got {p.compile_groups!r}.")
  if "local_train" in config:
    t = config.local_train
    rules.parse_rules(t.rules)
    _one_of(t.estimator_batch, from_scratch.ESTIMATOR_BATCHES, "local_train.estimator_batch")
    _one_of(t.augment, sampling.AUGMENTATIONS, "local_train.augment")
    _require(t.lr > 0, f"config.local_train.lr must be > 0, got {t.lr}.")
    _require(t.eta > 0, f"config.local_train.eta must be > 0, got {t.eta}.")
    _require(t.steps >= 1 and t.batch_size >= 1 and t.estimator_steps >= 0
             and t.estimator_warmup_steps >= 0,
             f"config.local_train.steps and batch_size must be >= 1, estimator_steps and "
             f"estimator_warmup_steps >= 0, got {t.steps}, {t.batch_size}, {t.estimator_steps}, "
             f"{t.estimator_warmup_steps}.")
    _require(t.eval_every >= 1 and t.steps % t.eval_every == 0,
             f"config.local_train.eval_every ({t.eval_every}) must divide steps ({t.steps}).")
    _require(isinstance(t.vmap_rules, bool),
             f"config.local_train.vmap_rules must be True or False, got {t.vmap_rules!r}.")


# The studies that run over several snapshots (the others take one).
OVER_SNAPSHOTS = ("snapshot", "phase6a", "phase6c")


def _check_snapshots(config) -> None:
  s = config.snapshot
  seeds = tuple(s.seeds)
  _require(all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**31 for v in seeds),
           f"config.snapshot.seeds must be integers in [0, 2^31), got {seeds}.")
  _require(len(set(seeds)) == len(seeds),
           f"config.snapshot.seeds={seeds} names a snapshot twice; its rows would count twice.")
  paths = checkpoints.snapshot_paths(s.path)
  _require(not (paths and seeds),
           f"config.snapshot.path={s.path!r} restores snapshots and config.snapshot.seeds={seeds} "
           "trains them: set one of the two.")
  _require(len(set(paths)) == len(paths),
           f"config.snapshot.path names a snapshot twice: {s.path!r}.")
  several = max(len(paths), len(seeds)) > 1
  _require(not several or config.experiment in OVER_SNAPSHOTS,
           f"{config.experiment} takes one snapshot; several (config.snapshot.seeds / a "
           f"comma-separated config.snapshot.path) are for {', '.join(OVER_SNAPSHOTS)}.")
