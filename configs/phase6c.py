r"""Phase 6C, the rule swap: credit x {inner_product, target_shift(eta), cosine, stretch rules} x lr x seeds.

  python experiments/main.py --config=configs/phase6c.py:synthetic --workdir=/tmp/phase6c
  python experiments/main.py --config=configs/phase6c.py --config.data.dir=../shared/data/cifar10 \
      --config.snapshot.path=/tmp/snapshot --workdir=/tmp/phase6c_cifar

Without --config.snapshot.path the BP snapshot is trained first and saved in the
workdir. Estimators are trained against the frozen snapshot, then every credit x
rule runs k local-update steps (one jitted scan, vmapped over the lrs).
"""
from creditfield import config_defaults


def get_config(arg=None):
  return config_defaults.phase6_config(arg, "phase6c")
