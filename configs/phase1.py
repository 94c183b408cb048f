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
    config_defaults.shrink_for_runlocal(c)
    c.credit.M_values = (2, 8)
  return c
