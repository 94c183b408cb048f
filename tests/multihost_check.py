"""Started by test_multihost.py: the README's multi-host launch, over loopback on this machine.

  python multihost_check.py WORKDIR PORT
runs, as two processes of 2 simulated CPU devices each (JAX_COORDINATOR_ADDRESS, ...,
--config.mesh.distributed=True), a snapshot that is stopped and resumed, then a Phase 6C study
on it, and the same study in one process of 4 devices and of 1 device; prints a JSON report.
"""
import json
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MAIN = os.path.join(os.path.dirname(HERE), "experiments", "main.py")
# A learned credit (its training, credit quality against the oracle, the k-step sweep) under
# two rules: what every Phase 6 study is made of, at a size that keeps the test short.
PHASE6 = ("--config=configs/phase6c.py:synthetic,runlocal", "--config.credit.names=vector_field",
          "--config.phase6.rules=inner_product,target_shift", "--config.phase6.etas=(1.0,)",
          "--config.estimator.steps=40", "--config.estimator.log_every=20")
SNAPSHOT = ("--config=configs/snapshot.py:synthetic,runlocal", "--config.snapshot.steps=60",
            "--config.snapshot.checkpoint_every=30", "--config.snapshot.eval_every=30",
            "--config.snapshot.log_every=30")
TIMEOUT = 400


def launch(args, workdir, devices: int, process=None, port=None):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
             PYTHONUNBUFFERED="1")
  command = [sys.executable, MAIN, *args, f"--workdir={workdir}"]
  if process is not None:
    env.update(JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
               JAX_PROCESS_ID=str(process))
    command.append("--config.mesh.distributed=True")
  log = open(f"{workdir}.{'single' if process is None else process}.log", "w")
  return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                          cwd=os.path.dirname(HERE))


def wait_all(processes) -> list[int]:
  try:
    return [p.wait(timeout=TIMEOUT) for p in processes]
  finally:
    for p in processes:
      if p.poll() is None:
        p.kill()


def two_processes(args, workdir, port) -> list[int]:
  return wait_all([launch(args, workdir, 2, i, port) for i in (0, 1)])


def main():
  root, port = sys.argv[1], int(sys.argv[2])
  multi, single, one_device, snap = (os.path.join(root, n) for n in (
      "phase6_multi", "phase6_single", "phase6_one_device", "snap"))
  report = {}
  report["snapshot_rc"] = two_processes(SNAPSHOT, snap, port)
  if report["snapshot_rc"] != [0, 0]:
    print(json.dumps(report))
    return
  with open(os.path.join(snap, "results.json")) as f:
    report["snapshot_uninterrupted"] = json.load(f)["rows"][0]
  # A run stopped after its first checkpoint: remove the later steps and resume.
  steps = sorted(int(n) for n in os.listdir(os.path.join(snap, "checkpoints")) if n.isdigit())
  for step in steps[1:]:
    shutil.rmtree(os.path.join(snap, "checkpoints", str(step)))
  report["snapshot_resumed_from"] = steps[0]
  report["snapshot_resume_rc"] = two_processes(SNAPSHOT, snap, port + 1)
  with open(os.path.join(snap, "results.json")) as f:
    report["snapshot_resumed"] = json.load(f)["rows"][0]
  # Phase 6 on that snapshot (saved by two processes): two processes of 2 devices, one process
  # of 4 devices (the reference) and one of 1 device (sharding changes nothing either).
  phase6 = PHASE6 + (f"--config.snapshot.path={snap}",)
  reference = launch(phase6, single, 4)
  report["phase6_multi_rc"] = two_processes(phase6, multi, port + 2)
  report["phase6_single_rc"] = wait_all([reference])
  report["phase6_one_device_rc"] = wait_all([launch(phase6, one_device, 1)])
  print(json.dumps(report))


if __name__ == "__main__":
  main()
