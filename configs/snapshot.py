r"""The BP snapshot: the student (L=4, d=256) trained by backprop on CIFAR-10, saved with Orbax.

  python experiments/main.py --config=configs/snapshot.py --config.data.dir=../shared/data/cifar10 \
      --workdir=/tmp/snapshot
  python experiments/main.py --config=configs/snapshot.py:synthetic --workdir=/tmp/snapshot_syn

The workdir then holds checkpoints/ (restore with creditfield.load_snapshot(workdir))
and results.json with the test accuracy. Rerunning with the same workdir resumes.
"""
from creditfield import config_defaults


def get_config(arg=None):
  args = config_defaults.parse_args(arg)
  c = config_defaults.base_config()
  c.experiment = "snapshot"
  if "synthetic" in args:
    config_defaults.use_synthetic(c)
  if "runlocal" in args:
    config_defaults.shrink_for_runlocal(c)
    if "synthetic" not in args:  # CIFAR-10 trains briefly
      c.snapshot.update(dict(steps=600, batch_size=128, eval_every=300, checkpoint_every=300,
                             log_every=100, warmup_steps=50))
  return c
