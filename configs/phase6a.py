r"""Phase 6A, phase6: can k local inner-product steps driven by each credit lower the loss?

  python experiments/main.py --config=configs/phase6a.py:synthetic --workdir=/tmp/phase6a
  python experiments/main.py --config=configs/phase6a.py --config.data.dir=../shared/data/cifar10 \
      --config.snapshot.path=/tmp/snapshot --workdir=/tmp/phase6a_cifar

Rows: credit x lr x k (k = 1..K) with gamma, rho on the snapshot and the loss change
on the update batches and on held-out data. It is configs/phase6c.py with one rule.
"""
import os

from creditfield import config_defaults


def get_config(arg=None):
  c = config_defaults.load(os.path.join(os.path.dirname(__file__), "phase6c.py"), arg)
  c.experiment = "phase6a"
  c.phase6.rules = "inner_product"
  return c
