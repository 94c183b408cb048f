r"""Phase 1: credit quality of the training-free estimators against the oracle.

  python experiments/main.py --config=configs/phase1.py:synthetic --workdir=/tmp/phase1
  python experiments/main.py --config=configs/phase1.py --config.data.dir=../shared/data/cifar10 \
      --workdir=/tmp/phase1_cifar

Rows: credit x layer (and "mean") with gamma, rho, nudge, over `num_seeds` seeds.
"""
from creditfield import config_defaults


def get_config(arg=None):
  args = config_defaults.parse_args(arg)
  c = config_defaults.base_config()
  c.experiment = "phase1"
  c.num_seeds = 3
  c.credit.names = "oracle,dfa,identity,forward_gradient"
  c.credit.M_values = (1, 8, 32)
  if "synthetic" in args:
    config_defaults.use_synthetic(c)
  if "runlocal" in args:
    c.num_seeds = 1
    c.student.width = 32
    c.data.synthetic.update(dict(in_dim=16, teacher_width=32, num_train=2048, num_test=512))
    c.snapshot.update(dict(steps=200, eval_every=100, checkpoint_every=100, log_every=100,
                           warmup_steps=20))
    c.credit.M_values = (2, 8)
    c.diagnostics.batch_size = 256
  return c
