"""Reliability: bad input fails early and clearly, faults are survived, runs reproduce.

One test per case of the reliability issue; the CLI cases run experiments/main.py.
"""
import json
import os
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import creditfield
from creditfield import bp_training
from creditfield import config_defaults
from creditfield import dataset as dataset_lib
from creditfield import datasets
from creditfield import training_loop
from creditfield.infra import checkpoints
from creditfield.infra import errors
from creditfield.infra import outputs
from creditfield.infra import run as run_lib
from creditfield.infra import validation

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(name="phase6c", arg="synthetic,runlocal"):
  return config_defaults.load(os.path.join(ROOT, "configs", f"{name}.py"), arg)


def _main(*args, **kwargs):
  return subprocess.Popen([sys.executable, os.path.join(ROOT, "experiments", "main.py"), *args],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                          **kwargs)


def _one_paragraph_error(proc, *needles):
  _, err = proc.communicate(timeout=300)
  assert proc.returncode != 0
  message = err.split("creditfield error:")[-1].strip()
  assert "Traceback" not in err and message.count("\n") == 0, err[-2000:]
  for needle in needles:
    assert needle in message, message
  return message


def test_cli_unknown_credit_name_lists_valid_names(tmp_path):
  _one_paragraph_error(_main("--config=configs/phase6c.py:synthetic,runlocal",
                             "--config.credit.names=nonsense", f"--workdir={tmp_path}"),
                       "nonsense", "oracle", "vector_field")


def test_cli_bad_data_dir_names_the_path_and_the_options(tmp_path):
  _one_paragraph_error(_main("--config=configs/phase6c.py:runlocal",
                             f"--config.data.dir={tmp_path}/nowhere",
                             f"--config.data.tfds_data_dir={tmp_path}/tfds",
                             f"--workdir={tmp_path}/w"),
                       "nowhere", "does not exist", "synthetic")


@pytest.mark.parametrize("key,value,needle", [
    ("credit.conditioning", "labels", "credit.conditioning='labels'"),
    ("credit.targets", "bwd", "credit.targets='bwd'"),
    ("data.name", "mnist", "data.name='mnist'"),
    ("phase6.rules", "inner_product,sideways", "valid rules are"),
    ("credit.M", 0, "M must be >= 1"),
    ("student.depth", 0, "student.depth must be >= 1"),
    ("estimator.lr", 0.0, "estimator.lr must be > 0"),
    ("snapshot.lr", -1.0, "snapshot.lr must be > 0"),
    ("phase6.lrs", (1e-3, -1.0), "positive learning rates"),
    ("phase6.etas", (0.1, 11.0), "eta values must lie in"),
    ("phase6.optimizer", "lbfgs", "phase6.optimizer='lbfgs'"),
])
def test_inconsistent_values_fail_before_any_work(tmp_path, key, value, needle):
  config = _config()
  section, name = key.split(".")
  config[section][name] = value
  with pytest.raises(ValueError, match=needle.replace("(", r"\(").replace("[", r"\[")):
    run_lib.run_experiment(config, str(tmp_path / "w"))
  assert not (tmp_path / "w").exists()


def test_batch_not_divisible_by_devices_and_too_large_mesh_fail_before_work(tmp_path):
  config = _config()
  config.mesh.data = 2  # one CPU device here
  with pytest.raises(ValueError, match="are available"):
    run_lib.run_experiment(config, str(tmp_path / "w"))
  from creditfield.infra import sharding  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError, match="not divisible by the 3 devices"):
    sharding.check_batch_sizes(config, 3)
  assert not (tmp_path / "w").exists()


def test_a_workdir_of_another_run_is_never_overwritten(tmp_path):
  config = _config("phase1")
  config.credit.names = "oracle"
  run_lib.run_experiment(config, str(tmp_path))
  before = {n: (tmp_path / n).read_bytes() for n in ("config.json", "results.json")}
  config.seed = 7
  with pytest.raises(Exception, match="different run"):
    run_lib.run_experiment(config, str(tmp_path))
  assert before == {n: (tmp_path / n).read_bytes() for n in before}


def test_nan_loss_stops_with_the_step_and_the_quantity(tmp_path):
  config = _config("snapshot")
  data = datasets.load(config, 0)
  poisoned = dataset_lib.Dataset(**dict(data.__dict__, x_train=data.x_train.at[:].set(jnp.nan)))
  spec = dataset_lib.student_spec(config, data)
  with pytest.raises(training_loop.NonFiniteError, match=r"loss became nan at step 0"):
    bp_training.train(spec, poisoned, config.snapshot, jnp.zeros(2, jnp.uint32))


def test_skip_nonfinite_option_skips_such_steps_instead(tmp_path):
  config = _config("snapshot")
  data = datasets.load(config, 0)
  poisoned = dataset_lib.Dataset(**dict(data.__dict__, x_train=data.x_train.at[0].set(jnp.nan)))
  spec = dataset_lib.student_spec(config, data)
  config.snapshot.steps = 100
  records = []
  params, _, final = bp_training.train(spec, poisoned, config.snapshot, jnp.zeros(2, jnp.uint32),
                                       on_metrics=records.extend, skip_nonfinite=True)
  skipped = sum(r.get("skipped", 0) for r in records if r["phase"] == "snapshot_train")
  # One poisoned sample in 2048: about 12% of batches of 256 hold it and are skipped.
  assert 0 < skipped < 50, skipped
  assert all(bool(jnp.all(jnp.isfinite(p))) for p in jax.tree.leaves(params))
  assert final["loss"] < 2.0  # the other steps trained


def _snapshot_command(workdir):
  return ("--config=configs/snapshot.py:synthetic,runlocal", "--config.snapshot.steps=3000",
          "--config.snapshot.checkpoint_every=500", f"--workdir={workdir}")


@pytest.fixture(scope="module")
def uninterrupted_snapshot(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("whole")
  whole = _main(*_snapshot_command(workdir))
  assert whole.wait(timeout=300) == 0
  return json.loads((workdir / "results.json").read_text())["rows"][0]


# SIGKILL: the harshest stop (no handler runs); SIGTERM: the run saves a checkpoint of its last
# finished chunk and says where to resume, in one line.
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_a_killed_run_resumes_to_the_uninterrupted_result(tmp_path, sig,
                                                          uninterrupted_snapshot):
  proc = _main(*_snapshot_command(tmp_path / "killed"))
  ckpt = tmp_path / "killed" / "checkpoints"
  deadline = time.time() + 240
  while time.time() < deadline and not (ckpt.exists() and any(
      n.isdigit() for n in os.listdir(ckpt))):
    time.sleep(0.2)
  proc.send_signal(sig)
  _, stderr = proc.communicate(timeout=60)
  assert not (tmp_path / "killed" / "results.json").exists(), "killed too late"
  if sig == signal.SIGTERM:
    assert proc.returncode != 0 and "Traceback" not in stderr, stderr[-2000:]
    assert "stopped by SIGTERM" in stderr and "rerun the same command to resume" in stderr
  resumed = _main(*_snapshot_command(tmp_path / "killed"))
  assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-2000:]
  row = json.loads((tmp_path / "killed" / "results.json").read_text())["rows"][0]
  assert (row["accuracy"], row["loss"]) == (uninterrupted_snapshot["accuracy"],
                                            uninterrupted_snapshot["loss"])
  # The resumed run replaced what the stopped one logged past its checkpoint: no duplicates.
  steps = [(r["phase"], r["step"]) for r in
           map(json.loads, (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines())
           if r.get("phase", "").startswith("snapshot")]
  assert len(steps) == len(set(steps)) and max(s for _, s in steps) == 3000


def test_half_written_and_truncated_checkpoints(tmp_path):
  config = _config("snapshot")
  config.snapshot.steps = 200
  run_lib.run_experiment(config, str(tmp_path))
  ckpt = tmp_path / "checkpoints"
  (ckpt / "300.orbax-checkpoint-tmp-1234").mkdir()  # a write that never finished
  assert checkpoints.warn_incomplete(str(ckpt)) == ["300.orbax-checkpoint-tmp-1234"]
  assert creditfield.load_snapshot(str(tmp_path)).step == 200
  for path in (ckpt / "200" / "params").rglob("*"):
    if path.is_file() and path.name != "_METADATA":
      path.write_bytes(b"")  # truncated
  with pytest.raises(checkpoints.SnapshotError, match="truncated"):
    creditfield.load_snapshot(str(tmp_path))


def test_different_seeds_differ_and_meta_records_the_run(tmp_path):
  results = []
  for seed in (0, 1):
    config = _config("phase1")
    config.credit.names = "forward_gradient"  # its directions come from the seed
    config.seed = seed
    results.append(run_lib.run_experiment(config, str(tmp_path / str(seed))))
  gammas = [[r["gamma"] for r in res["rows"] if r["credit"] == "forward_gradient"]
            for res in results]
  assert gammas[0] != gammas[1]
  meta = results[0]["meta"]
  for key in ("creditfield_version", "git_commit", "git_dirty", "jax_version", "backend",
              "devices", "data_fingerprint", "mesh", "wall_seconds", "xla_flags"):
    assert key in meta, key
  assert meta["creditfield_version"] == creditfield.__version__


def test_meta_says_when_the_code_that_ran_is_not_its_commit(tmp_path):
  """git_dirty is False for a tree at its commit and True once a tracked file differs (as a
  copied tree whose .git lags it does): the commit is then not the code that ran."""
  git = lambda *args: subprocess.run(["git", "-C", str(tmp_path), *args], check=True,
                                     capture_output=True)
  git("init", "-q")
  (tmp_path / "code.py").write_text("x = 1\n")
  git("add", "code.py")
  git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
  clean = outputs.git_state(str(tmp_path))
  assert len(clean["git_commit"]) == 40 and clean["git_dirty"] is False
  (tmp_path / "code.py").write_text("x = 2\n")
  assert outputs.git_state(str(tmp_path)) == dict(clean, git_dirty=True)
  assert outputs.git_state(str(tmp_path / "nowhere")) == {"git_commit": "", "git_dirty": None}


def test_validation_accepts_every_shipped_config():
  for name in ("phase1", "pivot", "snapshot", "phase6a", "phase6c", "bench"):
    for arg in ("synthetic", "synthetic,runlocal", "runlocal"):
      validation.validate(_config(name, arg))



@pytest.mark.parametrize("key,value,match", [
    ("estimator.grad_clip", -1.0, "grad_clip"),
    ("diagnostics.batch_size", 0, "diagnostics"),
    ("diagnostics.num_directions", 0, "diagnostics"),
    ("phase6.batch_size", 0, "phase6.batch_size"),
    ("phase6.heldout_size", 0, "heldout_size"),
    ("phase6.heldout_size", 10 ** 6, "larger than the test split"),
    ("snapshot.warmup_steps", -1, "warmup_steps"),
    ("estimator.warmup_steps", -5, "warmup_steps"),
    ("estimator.log_every", 0, "log_every"),
    ("data.synthetic.num_outputs", 1, "num_outputs"),
    ("data.synthetic.num_train", 10, "larger than the training set"),
    ("data.dir", "/some/folder", "synthetic task"),
    ("credit.radial", "sideways", "credit.radial"),
    ("credit.size", "huge", "credit.size"),
    ("credit.correction", "magic", "credit.correction"),
    ("credit.correction_directions", "spiral", "credit.correction_directions"),
    ("credit.correction_layers", "some", "credit.correction_layers"),
    ("credit.block_credit", "theirs", "credit.block_credit"),
    ("credit.correction_M", 1000, "orthogonal takes at most"),
    ("credit.matmul_precision", "fastest", "credit.matmul_precision"),
    ("credit.matmul_precision", "tensorfloat32", "finite-difference targets cancel"),
    ("credit.dni.hidden", (0,), "dni.hidden"),
    ("snapshot.seeds", (0, 0), "twice"),
    ("snapshot.seeds", (-1,), "snapshot.seeds"),
    ("snapshot.path", "/a,/a", "twice"),
])
def test_values_that_would_give_wrong_numbers_are_refused_before_any_work(key, value, match):
  """Each of these once ran to exit 0 with a wrong or NaN number (or a silent cap)."""
  config = config_defaults.load(os.path.join(ROOT, "configs", "phase6c.py"), "synthetic,runlocal")
  *path, leaf = key.split(".")
  node = config
  for part in path:
    node = node[part]
  node[leaf] = value
  if key == "credit.correction_M":  # more orthogonal directions than the width
    config.credit.correction_directions = "orthogonal"
  with pytest.raises(validation.ConfigError, match=match):
    validation.validate(config)


def test_several_snapshots_are_refused_where_a_study_takes_one():
  """Only the snapshot study and Phase 6 run over snapshots; training and restoring at once is
  ambiguous."""
  config = _config("pivot")
  config.snapshot.seeds = (0, 1)
  with pytest.raises(validation.ConfigError, match="takes one snapshot"):
    validation.validate(config)
  config = _config("phase6c")
  config.snapshot.update(dict(seeds=(0, 1), path="/a"))
  with pytest.raises(validation.ConfigError, match="set one of the two"):
    validation.validate(config)


def test_non_finite_numbers_are_json_null_with_a_flag(tmp_path):
  outputs.write_results(str(tmp_path), [{"gamma": float("nan"), "rho": 0.5},
                                        {"gamma": 0.1, "rho": np.float32(np.inf)}], meta={})
  rows = json.load(open(tmp_path / "results.json"))["rows"]
  assert rows[0] == {"gamma": None, "rho": 0.5, "nonfinite": ["gamma"]}
  assert rows[1] == {"gamma": 0.1, "rho": None, "nonfinite": ["rho"]}


def test_skip_nonfinite_refuses_an_update_that_makes_the_state_nan():
  """A finite loss whose update turns a parameter into NaN is skipped, not kept."""
  old = {"w": jnp.ones(3), "step": jnp.int32(1)}
  new = {"w": jnp.array([1.0, jnp.nan, 2.0]), "step": jnp.int32(2)}
  state, metrics = training_loop.keep_if_finite(new, old, jnp.float32(0.5), {}, skip=True)
  np.testing.assert_array_equal(state["w"], old["w"])
  assert float(metrics["skipped"]) == 1.0


def test_a_second_process_on_a_workdir_in_use_is_refused_naming_the_holder(tmp_path):
  from creditfield.infra import workdir_lock  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "w"
  with workdir_lock.held(str(workdir)):
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", "main.py"),
         "--config=" + os.path.join(ROOT, "configs", "phase1.py") + ":synthetic,runlocal",
         f"--workdir={workdir}"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode != 0
    assert f"in use by another run (process {os.getpid()}" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path, caplog):
  from creditfield.infra import workdir_lock  # pylint: disable=g-import-not-at-top
  dead = subprocess.Popen([sys.executable, "-c", "pass"])
  dead.wait()
  (tmp_path / ".lock").write_text(str(dead.pid))
  with caplog.at_level("WARNING"), workdir_lock.held(str(tmp_path)):
    assert (tmp_path / ".lock").read_text() == str(os.getpid())
  assert f"left by process {dead.pid}" in caplog.text


def test_a_snapshot_of_other_data_is_refused_with_both_fingerprints():
  with pytest.raises(checkpoints.SnapshotError, match="fingerprint aaaa.*fingerprint bbbb"):
    checkpoints.check_data("aaaa", "bbbb", "The snapshot S", allow_other=False)
  checkpoints.check_data("aaaa", "bbbb", "The snapshot S", allow_other=True)  # a transfer study
  checkpoints.check_data("aaaa", "aaaa", "The snapshot S", allow_other=False)


def test_a_corrupt_newest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, caplog):
  config = _config("snapshot")
  config.snapshot.update(dict(steps=200, checkpoint_every=100))
  data = datasets.load(config, 0)
  spec = dataset_lib.student_spec(config, data)
  key = jnp.zeros(2, jnp.uint32)
  with checkpoints.manager(str(tmp_path)) as mngr:
    bp_training.train(spec, data, config.snapshot, key, mngr=mngr)
  for path in (tmp_path / "200" / "params").rglob("*"):
    if path.is_file() and path.name != "_METADATA":
      path.write_bytes(b"")  # the newest write was cut short
  resumed_from = []
  with caplog.at_level("WARNING"), checkpoints.manager(str(tmp_path)) as mngr:
    _, _, final = bp_training.train(spec, data, config.snapshot, key, mngr=mngr,
                                    on_resume=resumed_from.append)
  assert resumed_from == [100] and "200 cannot be restored" in caplog.text
  assert (tmp_path / "200.unrestorable").is_dir()  # kept aside, not deleted
  assert creditfield.load_snapshot(str(tmp_path)).step == 200  # saved again
  assert np.isfinite(final["loss"])


def test_a_refused_rerun_names_the_keys_that_changed(tmp_path):
  config = _config("phase1")
  outputs.prepare_workdir(str(tmp_path), config.to_json_best_effort(sort_keys=True))
  config.seed, config.credit.M = 7, 3
  with pytest.raises(outputs.WorkdirConflictError,
                     match=r"credit\.M: 8 there, 3 now.*seed: 0 there, 7 now"):
    outputs.prepare_workdir(str(tmp_path), config.to_json_best_effort(sort_keys=True))


@pytest.mark.parametrize("case", ["workdir_is_a_file", "workdir_read_only", "two_configs",
                                  "config_not_python", "cache_dir_is_a_file", "bogus_precision",
                                  "huge_seed", "width_beyond_memory"])
def test_user_fixable_failures_are_one_paragraph(tmp_path, case):
  """Each once ended in a traceback (or, for two --config flags, silently kept the last)."""
  (tmp_path / "a_file").write_text("x")
  workdir = tmp_path / "w"
  config = "--config=" + os.path.join(ROOT, "configs", "phase1.py") + ":synthetic,runlocal"
  args = [config, f"--workdir={workdir}"]
  needle = {"workdir_is_a_file": "is a file, not a folder", "workdir_read_only": "Cannot write",
            "two_configs": "given 2 times", "config_not_python": "is not a config file",
            "cache_dir_is_a_file": "is a file, not a folder", "bogus_precision": "matmul_precision",
            "huge_seed": "2^63", "width_beyond_memory": "ran out of memory"}[case]
  if case == "workdir_is_a_file":
    args[1] = f"--workdir={tmp_path / 'a_file'}"
  elif case == "workdir_read_only":
    if os.geteuid() == 0:
      args[1] = "--workdir=/proc/creditfield_workdir"  # root writes anywhere but /proc
    else:
      (tmp_path / "ro").mkdir(mode=0o500)
      args[1] = f"--workdir={tmp_path / 'ro' / 'w'}"
  elif case == "two_configs":
    args.append("--config=" + os.path.join(ROOT, "configs", "phase6c.py"))
  elif case == "config_not_python":
    args[0] = "--config=" + os.path.join(ROOT, "README.md")
  elif case == "cache_dir_is_a_file":
    args.append(f"--config.compile_cache.dir={tmp_path / 'a_file'}")
  elif case == "bogus_precision":
    args.append("--config.matmul_precision=fastest")
  elif case == "huge_seed":
    args.append(f"--config.seed={2 ** 63}")
  elif case == "width_beyond_memory":  # a real allocation of 128 TiB, refused by XLA
    args.append(f"--config.student.width={2 ** 21}")
  message = _one_paragraph_error(_main(*args), needle)
  if case == "width_beyond_memory":
    assert "student width 2097152" in message and "vmap_seeds=False" in message


def test_non_finite_headline_numbers_end_the_run_with_an_error_naming_them(tmp_path):
  from creditfield.infra import run as run_module  # pylint: disable=g-import-not-at-top
  rows = [dict(seed="all", credit="oracle", rule="cosine", lr=0.1, k=5,
               delta_loss_update=float("nan"), gamma=1.0),
          dict(seed=0, credit="oracle", rule="cosine", lr=0.1, k=5, delta_loss_update=float("nan")),
          dict(seed="all", credit="zero", rule="cosine", lr=0.1, k=5, delta_loss_update=0.0)]
  with pytest.raises(errors.UserError,
                     match=r"1 summary row.*credit=oracle, rule=cosine, lr=0.1, k=5: "
                           r"delta_loss_update"):
    run_module.check_headlines({"rows": rows}, str(tmp_path))
  run_module.check_headlines({"rows": rows[2:]}, str(tmp_path))  # finite: nothing to say


def _local_train_command(workdir):
  return ["--config=configs/local_train.py:synthetic,runlocal", "--config.credit.names=identity,"
          "vector_field", "--config.local_train.rules=inner_product",
          "--config.local_train.steps=200", f"--workdir={workdir}"]


def test_a_stopped_local_training_resumes_to_the_uninterrupted_result(tmp_path):
  """Local training saves each credit x rule's state at every evaluation (so a SIGKILL loses at
  most one evaluation interval; SIGTERM is the same plus its one line): a run stopped after
  its first save resumes there and ends with the uninterrupted run's rows, every (run, step)
  logged once; a finished workdir rerun trains nothing again."""
  from creditfield.infra import tensorboard_events  # pylint: disable=g-import-not-at-top
  proc = _main(*_local_train_command(tmp_path / "killed"))
  # Mid-way through the second unit, after its first save.
  saved = tmp_path / "killed" / "local_train" / "vector_field__inner_product" / "seeds0"
  deadline = time.time() + 240
  while time.time() < deadline and not (saved / "progress.json").exists():
    time.sleep(0.05)
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=60)
  assert not (saved / "finished.json").exists(), "stopped too late"
  assert proc.returncode != 0 and "Traceback" not in stderr, stderr[-2000:]
  assert "stopped by SIGTERM" in stderr and "rerun the same command to resume" in stderr
  whole = _main(*_local_train_command(tmp_path / "whole"))
  assert whole.wait(timeout=300) == 0, whole.stderr.read()[-2000:]
  logs = []
  for _ in range(2):  # the resume, then a rerun of the finished run
    resumed = _main(*_local_train_command(tmp_path / "killed"))
    logs.append(resumed.communicate(timeout=300)[1])
    assert resumed.returncode == 0, logs[-1][-2000:]
  assert "vector_field__inner_product/seeds0: resuming from step " in logs[0]
  assert "local identity" not in logs[0]  # finished before the stop: not trained again
  assert "local vector_field" not in logs[1] and "resuming" not in logs[1]
  rows = lambda w: [r for r in json.loads((w / "results.json").read_text())["rows"]
                    if isinstance(r.get("seed"), int)]
  final = lambda r: (r["credit"], r["test_accuracy"], r["test_loss"], r["gamma"])
  assert [final(r) for r in rows(tmp_path / "killed")] == [
      final(r) for r in rows(tmp_path / "whole")]
  logged = [json.loads(line) for line in
            (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()]
  keys = [(tensorboard_events.run_name(r), r["step"]) for r in logged if "step" in r]
  assert len(keys) == len(set(keys))
  whole_evals = (tmp_path / "whole" / "metrics.jsonl").read_text().count('"local_eval"')
  assert sum(r.get("phase") == "local_eval" for r in logged) == whole_evals == 20


def _pivot_command(workdir):
  return ["--config=configs/pivot.py:synthetic,runlocal", "--config.estimator.steps=400",
          f"--workdir={workdir}"]


def test_a_stopped_pivot_resumes_its_entries_to_the_uninterrupted_result(tmp_path):
  """Each credit-quality entry is a resumable unit: a pivot stopped after some entries were
  measured and while a learned one trains resumes there (measured entries are not trained
  again, the training from its saved state) and ends with the uninterrupted run's rows."""
  proc = _main(*_pivot_command(tmp_path / "killed"))
  entries = tmp_path / "killed" / "entries"
  deadline = time.time() + 240
  # Five main entries measured (the last a learned one, scalar_bridge): vector_field trains.
  while time.time() < deadline and len(list(entries.glob("*/finished.json"))) < 5:
    time.sleep(0.05)
  time.sleep(1.0)
  proc.send_signal(signal.SIGTERM)
  _, stderr = proc.communicate(timeout=60)
  finished_before = {p.parent.name for p in entries.glob("*/finished.json")}
  assert proc.returncode != 0 and "Traceback" not in stderr, stderr[-2000:]
  assert 5 <= len(finished_before) < 8, finished_before  # stopped mid-way
  whole = _main(*_pivot_command(tmp_path / "whole"))
  assert whole.wait(timeout=300) == 0, whole.stderr.read()[-2000:]
  resumed = _main(*_pivot_command(tmp_path / "killed"))
  log = resumed.communicate(timeout=300)[1]
  assert resumed.returncode == 0, log[-2000:]
  assert "estimator scalar_bridge" not in log  # measured before the stop: not trained again
  if "stopped by SIGTERM at step" in stderr:  # the stop came while vector_field trained
    assert "training: resuming from step" in log, log[-2000:]
  rows = lambda w: [r for r in json.loads((w / "results.json").read_text())["rows"]
                    if isinstance(r.get("seed"), int)]
  measured = lambda r: (r["study"], r["credit"], r.get("M"), r.get("variant"), r["layer"],
                        r["gamma"], r["rho"], r["nudge"])
  assert [measured(r) for r in rows(tmp_path / "killed")] == [
      measured(r) for r in rows(tmp_path / "whole")]


def test_a_full_disk_while_checkpointing_is_one_paragraph(tmp_path, monkeypatch, capsys):
  """Orbax raising the OS's ENOSPC mid-save (as a full disk does) ends the run with one
  paragraph naming the checkpoint and what to do, not a traceback."""
  import errno  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top

  def full(*unused_args, **unused_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(ocp.CheckpointManager, "save", full)
  with pytest.raises(SystemExit) as stopped:
    run_lib.main(_config("snapshot"), str(tmp_path / "w"))
  message = capsys.readouterr().err.split("creditfield error:")[-1].strip()
  assert stopped.value.code == 1 and message.count("\n") == 0
  assert "disk filled up" in message and "checkpoint step" in message and "resumes" in message


def test_a_stopped_estimator_training_resumes_to_the_uninterrupted_result(tmp_path, spec, params):
  """SIGTERM during an estimator's training saves its state at the end of the running chunk;
  the same call resumes there and returns the uninterrupted run's parameters, bit for bit."""
  from creditfield import estimator_training  # pylint: disable=g-import-not-at-top
  from creditfield import estimators  # pylint: disable=g-import-not-at-top
  est = estimators.make("vector_field", spec, config_defaults.base_config().credit)
  cfg = config_defaults.base_config().estimator
  cfg.update(dict(steps=40, log_every=10, batch_size=16, warmup_steps=0))
  x = jax.random.normal(jax.random.PRNGKey(1), (64, spec.in_dim))
  y = jax.random.randint(jax.random.PRNGKey(2), (64,), 0, spec.num_outputs)
  keys = jax.random.split(jax.random.PRNGKey(3), 2)
  tags = [dict(seed=0), dict(seed=1)]
  train = lambda **kw: estimator_training.train_seeds(est, params, x, y, cfg, keys, tags, **kw)
  whole = train()
  stop_after_first_chunk = lambda records: os.kill(os.getpid(), signal.SIGTERM)
  with pytest.raises(training_loop.Interrupted, match="at step 10/40"):
    train(resume_dir=str(tmp_path / "unit"), on_metrics=stop_after_first_chunk)
  assert json.loads((tmp_path / "unit" / "progress.json").read_text())["step"] == 10
  logged = []
  resumed = train(resume_dir=str(tmp_path / "unit"), on_metrics=logged.extend)
  assert min(r["step"] for r in logged) == 10  # it resumed; it did not start again
  jax.tree.map(np.testing.assert_array_equal, resumed, whole)
  assert not (tmp_path / "unit" / "progress.json").exists()  # cleared once finished
