"""Run in a fresh process with 4 simulated CPU devices by test_sharding.py; prints JSON.

Each sharded computation is compared with the same computation without a mesh; whole studies
on 1 and 4 devices (and on 2 processes) are compared by multihost_check.py.
"""
import json
import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from creditfield import bp_training, config_defaults, diagnostics, estimator_training, estimators
from creditfield import phase6_sweep, rules
from creditfield import student as student_lib
from creditfield.infra import sharding


def max_diff(a, b):
  return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def both(fn):
  """fn() without a mesh and under a 4-device mesh; returns (max |diff|, sharded devices)."""
  plain = fn()
  mesh = sharding.make_mesh(ml_collections.ConfigDict(dict(data=4)))
  with jax.set_mesh(mesh):
    sharded = fn()
  return max_diff(plain, sharded)


def main():
  out = {"devices": jax.device_count()}
  spec = student_lib.StudentSpec(in_dim=12, width=16, depth=3, num_outputs=4)
  params = student_lib.init_params(spec, jax.random.PRNGKey(0))
  x = jax.random.normal(jax.random.PRNGKey(1), (256, 12))
  y = jnp.arange(256) % 4
  key = jax.random.PRNGKey(2)
  credit_cfg = config_defaults.base_config().credit
  credit_cfg.vector_field.hidden = (32,)
  ecfg = ml_collections.ConfigDict(dict(steps=1, batch_size=32, lr=1e-3, schedule="constant",
                                        warmup_steps=0, ema_decay=0.9, grad_clip=1.0,
                                        log_every=1))
  vf = estimators.make("vector_field", spec, credit_cfg, 4)
  phi = estimator_training.initial_params(vf, key, params, x, y, 32)

  def vf_step():
    step = jax.jit(estimator_training.make_train_step(vf, ecfg))
    return step((params, x, y, key), estimator_training.init_state(ecfg, phi), 3)
  out["estimator_step"] = both(vf_step)

  def bp_step():
    opt = optax.adam(1e-3)
    step = jax.jit(bp_training.make_train_step(spec, opt, 32, key))
    return step((x, y), bp_training.TrainState(params, opt.init(params)), 5)
  out["bp_step"] = both(bp_step)

  dcfg = ml_collections.ConfigDict(dict(num_directions=4, sigma=1e-3, nudge_eps=1e-2))
  out["diagnostics"] = both(lambda: diagnostics.evaluate_credit(
      vf, params, x[:64], y[:64], phi, key, dcfg))

  bx, by = x[:128].reshape(4, 32, 12), y[:128].reshape(4, 32)
  proj = rules.projections(key, spec)
  out["phase6_scan"] = both(lambda: phase6_sweep.sweep(
      vf, phi, params, bx, by, x[128:192], y[128:192], key, jnp.asarray([1e-3, 1e-1]),
      rules.rule_index("target_shift"), 0.3, proj, optimizer="sgd", update_embed=True))

  errors = {}
  for name, fn in {
      "mesh_too_large": lambda: sharding.make_mesh(ml_collections.ConfigDict(dict(data=8))),
      "batch_not_divisible": lambda: sharding.check_batch_sizes(
          ml_collections.ConfigDict(dict(estimator=dict(batch_size=30))), 4)}.items():
    try:
      fn()
      errors[name] = ""
    except ValueError as e:
      errors[name] = str(e)
  out["errors"] = errors

  json.dump(out, sys.stdout)


if __name__ == "__main__":
  main()
