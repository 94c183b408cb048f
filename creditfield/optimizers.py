"""Every optimiser of the project, built from its config section: the one place where a
learning rate, a schedule or a weight decay of the config is used. Values are checked in
validation.py before any work.

  adamw(cfg)       the student: snapshot (config.snapshot) and local training (config.local_train)
  adam(cfg)        learned estimators (config.estimator): clipping, constant or cosine schedule
  injected(name)   Phase 6 (config.phase6.optimizer): sgd | adam, the lr a vmappable argument
"""
import optax

SCHEDULES = ("constant", "cosine")
PHASE6 = ("sgd", "adam")


def warmup_cosine(lr: float, steps: int, warmup_steps: int) -> optax.Schedule:
  """A linear warmup from 0 to `lr`, then a cosine decay to 0 at `steps`."""
  return optax.warmup_cosine_decay_schedule(0.0, lr, min(warmup_steps, max(steps - 1, 0)),
                                            max(steps, 1))


def adamw(cfg) -> optax.GradientTransformation:
  """AdamW with `warmup_cosine(cfg.lr, cfg.steps, cfg.warmup_steps)` and `cfg.weight_decay`."""
  return optax.adamw(warmup_cosine(cfg.lr, cfg.steps, cfg.warmup_steps),
                     weight_decay=cfg.weight_decay)


def adam(cfg) -> optax.GradientTransformation:
  """Adam at `cfg.lr` (`cfg.schedule`: constant, or warmup-cosine over `cfg.steps`), after
  clipping the global norm to `cfg.grad_clip` (0: none)."""
  schedule = (cfg.lr if cfg.schedule == "constant"
              else warmup_cosine(cfg.lr, cfg.steps, cfg.warmup_steps))
  chain = [optax.clip_by_global_norm(cfg.grad_clip)] if cfg.grad_clip else []
  return optax.chain(*chain, optax.adam(schedule))


def injected(name: str):
  """The Phase 6 optimiser, called as `injected(name)(learning_rate=lr)` with a traced lr."""
  return {"sgd": optax.inject_hyperparams(optax.sgd),
          "adam": optax.inject_hyperparams(optax.adam)}[name]
