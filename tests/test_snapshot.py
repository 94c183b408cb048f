"""The BP snapshot: Orbax save/restore, resume after an interruption, architecture checks."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import creditfield
from creditfield import bp_training
from creditfield import config_defaults
from creditfield import dataset as dataset_lib
from creditfield import datasets
from creditfield.infra import checkpoints
from creditfield.infra import outputs
from creditfield.studies import common

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config():
  c = config_defaults.base_config()
  config_defaults.use_synthetic(c)
  config_defaults.shrink_for_runlocal(c)
  c.student.width = 16
  c.data.synthetic.update(dict(in_dim=8, teacher_width=16, num_train=256, num_test=64))
  c.snapshot.update(dict(steps=12, batch_size=16, eval_every=4, checkpoint_every=4,
                         log_every=4, warmup_steps=2))
  return c


def _train(tmp_path, config, on_metrics=None):
  data = datasets.load(config, 0)
  spec = dataset_lib.student_spec(config, data)
  mngr = checkpoints.manager(str(tmp_path / "checkpoints"))
  try:
    return bp_training.train(spec, data, config.snapshot, jax.random.PRNGKey(0), mngr=mngr,
                             meta={"note": "test"}, on_metrics=on_metrics), spec
  finally:
    mngr.close()


def _equal_trees(a, b):
  jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def test_save_then_restore_is_bit_identical(tmp_path):
  (params, opt_state, _), spec = _train(tmp_path, _config())
  mngr = checkpoints.manager(str(tmp_path / "checkpoints"))
  restored_params, restored_opt, meta = checkpoints.restore(mngr, 12, params, opt_state)
  mngr.close()
  _equal_trees(params, restored_params)
  _equal_trees(opt_state, restored_opt)
  assert meta["note"] == "test" and meta["spec"]["width"] == 16
  snap = creditfield.load_snapshot(str(tmp_path))
  _equal_trees(params, snap.params)
  assert snap.spec == spec and snap.step == 12


def test_interrupted_training_resumes_to_the_same_result(tmp_path):
  config = _config()
  (uninterrupted, _, final), _ = _train(tmp_path / "a", config)

  def crash_after_step_8(records):
    if records[-1]["step"] >= 8:
      raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    _train(tmp_path / "b", config, on_metrics=crash_after_step_8)
  (resumed, _, resumed_final), _ = _train(tmp_path / "b", config)
  _equal_trees(uninterrupted, resumed)
  assert resumed_final == final


def test_a_snapshot_of_another_architecture_is_a_clear_error(tmp_path):
  config = _config()
  _train(tmp_path, config)
  config.snapshot.path = str(tmp_path)
  config.student.width = 24
  data = datasets.load(config, 0)
  run = common.Run(config, str(tmp_path), data, dataset_lib.student_spec(config, data),
                   outputs.MetricsWriter(str(tmp_path)), outputs.Stopwatch(), False)
  with pytest.raises(checkpoints.SnapshotError, match="width: snapshot 16 vs config 24"):
    common.student(run)


@pytest.mark.parametrize("case", ["missing", "not_a_checkpoint"])
def test_bad_snapshot_paths_are_clear_errors(tmp_path, case):
  path = tmp_path / "snap"
  if case == "not_a_checkpoint":
    path.mkdir()
    (path / "notes.txt").write_text("hello")
  with pytest.raises(checkpoints.SnapshotError, match="does not exist|No Orbax checkpoint"):
    creditfield.load_snapshot(str(path))


def test_a_trained_estimator_is_reused_only_with_the_settings_that_made_it(tmp_path):
  """Estimator checkpoints carry their settings: other settings are a clear error naming the
  differing fields and the choices, not a silent reuse."""
  config = config_defaults.load(os.path.join(ROOT, "configs", "phase6c.py"), "synthetic,runlocal")
  student = {"w": jnp.ones(3)}
  settings = checkpoints.estimator_settings(config, "fingerprint-a", student)
  tree = {"w": jnp.arange(4.0)}
  path = str(tmp_path / "estimators" / "vector_field_M4_seed0")
  checkpoints.save_estimator(path, tree, settings)
  np.testing.assert_array_equal(checkpoints.restore_estimator(path, tree, settings)["w"], tree["w"])
  config.estimator.lr = 3e-3
  config.credit.names = "oracle"  # not a setting of the estimator: ignored
  changed = checkpoints.estimator_settings(config, "fingerprint-a", student)
  with pytest.raises(checkpoints.EstimatorConfigError,
                     match=r"estimator\.lr: saved 0\.001, now 0\.003.*new --workdir.*estimators/"):
    checkpoints.restore_estimator(path, tree, changed)
  config.estimator.lr = 1e-3
  with pytest.raises(checkpoints.EstimatorConfigError, match="data_fingerprint"):
    checkpoints.restore_estimator(path, tree, checkpoints.estimator_settings(config, "other",
                                                                             student))
  with pytest.raises(checkpoints.EstimatorConfigError, match="student_fingerprint"):
    checkpoints.restore_estimator(path, tree, checkpoints.estimator_settings(
        config, "fingerprint-a", {"w": jnp.zeros(3)}))
