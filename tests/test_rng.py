"""Named random streams: the keys a study derives are all different, and the synthetic
snapshot no longer starts as the teacher."""
import itertools
import os

import jax
import numpy as np

from creditfield import bp_training
from creditfield import config_defaults
from creditfield import dataset as dataset_lib
from creditfield import datasets
from creditfield import estimators
from creditfield import rng
from creditfield import student as student_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_why_ad_hoc_splits_collide_under_partitionable_threefry():
  """The identities that made the teacher and the snapshot init one key; `rng` avoids them."""
  k = jax.random.PRNGKey(3)
  assert jax.config.values["jax_threefry_partitionable"]
  np.testing.assert_array_equal(jax.random.split(k, 3)[0], jax.random.split(k)[0])
  np.testing.assert_array_equal(jax.random.fold_in(k, 2), jax.random.split(k, 5)[2])


def _run_keys(seeds=(0, 1, 2), steps=range(20), ms=(4, 32)) -> dict[str, np.ndarray]:
  """Every key a Phase 6 / pivot / local-training run derives for these seeds, by name."""
  keys = {}
  for seed in seeds:
    data = rng.stream(seed, "data")
    keys.update({f"{seed}/data/{n}": k for n, k in zip(
        ("teacher", "train", "test"), rng.leaves(data, "teacher", "train", "test"))})
    snapshot = rng.stream(seed, "snapshot")
    keys[f"{seed}/snapshot/init"] = rng.stream(snapshot, "init")
    for step in steps:
      for n, k in zip(("batch", "augment"),
                      rng.leaves(rng.step_key(snapshot, step), "batch", "augment")):
        keys[f"{seed}/snapshot/{step}/{n}"] = k
    for name, m in itertools.product(estimators.NAMES, ms):
      est = rng.estimator_stream(seed, name, m)
      for leaf in ("init", "batch", "eval", "phase6"):
        keys[f"{seed}/{name}/M{m}/{leaf}"] = rng.stream(est, leaf)
      for step in steps:
        for n, k in zip(("batch", "augment", "loss"),
                        rng.leaves(rng.step_key(est, step), "batch", "augment", "loss")):
          keys[f"{seed}/{name}/M{m}/{step}/{n}"] = k
    for leaf in ("batch", "train"):
      keys[f"{seed}/diagnostics/{leaf}"] = rng.stream(seed, "diagnostics", leaf)
    for leaf in ("batches", "projections"):
      keys[f"{seed}/phase6/{leaf}"] = rng.stream(seed, "phase6", leaf)
    local = rng.stream(seed, "local_train")
    for leaf in ("init", "quality", "projections"):
      keys[f"{seed}/local_train/{leaf}"] = rng.stream(local, leaf)
    keys.update({f"{seed}/local_train/init/{n}": k for n, k in zip(
        ("student", "estimator"), rng.leaves(rng.stream(local, "init"), "student", "estimator"))})
    for step in steps:
      for n, k in zip(("batch", "augment", "estimator", "credit"), rng.leaves(
          rng.step_key(local, step), "batch", "augment", "estimator", "credit")):
        keys[f"{seed}/local_train/{step}/{n}"] = k
  return keys


def test_no_two_named_streams_are_equal():
  keys = _run_keys()
  seen = {}
  for name, key in keys.items():
    data = tuple(np.asarray(jax.random.key_data(key) if jax.dtypes.issubdtype(
        key.dtype, jax.dtypes.prng_key) else key).tolist())
    assert data not in seen, f"{name} equals {seen[data]}"
    seen[data] = name
  assert len(seen) > 3000  # seeds x estimators x M x steps: the check covered them all


def test_stream_names_are_order_independent_and_stable():
  assert rng.name_id("teacher") == rng.name_id("teacher") != rng.name_id("train")
  np.testing.assert_array_equal(rng.stream(0, "data", "teacher"),
                                rng.stream(rng.stream(0, "data"), "teacher"))
  # An estimator's key does not depend on where its name stands in a list.
  assert rng.estimator_stream(0, "vector_field", 4).tolist() != rng.estimator_stream(
      0, "scalar_bridge", 4).tolist()


def test_synthetic_snapshot_starts_near_chance_not_as_the_teacher():
  config = config_defaults.load(os.path.join(ROOT, "configs", "snapshot.py"), "synthetic")
  config.data.synthetic.update(dict(num_train=512, num_test=2048))
  config.student.width = config.data.synthetic.teacher_width  # the teacher's own shape
  data = datasets.load(config, config.seed)
  spec = dataset_lib.student_spec(config, data)
  config.snapshot.steps = 0
  _, _, at_init = bp_training.train(spec, data, config.snapshot,
                                    rng.stream(config.seed, "snapshot"))
  assert at_init["accuracy"] < 0.3, at_init  # 10 classes: near chance
  # The check can fail: a student initialised with the teacher's key is the teacher.
  teacher_key = rng.leaves(rng.stream(config.seed, "data"), "teacher")[0]
  teacher = student_lib.init_params(spec, teacher_key, config.data.synthetic.alpha)
  assert bp_training.evaluate(spec, teacher, data.x_test, data.y_test)["accuracy"] == 1.0
