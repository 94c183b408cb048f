"""Datasets by name: `load(config, seed)` -> `dataset.Dataset` (synthetic or CIFAR-10)."""
from creditfield import cifar10
from creditfield import dataset as dataset_lib
from creditfield import synthetic
from creditfield.infra import errors

DATASETS = ("synthetic", "cifar10")


def load(config, seed: int) -> dataset_lib.Dataset:
  """The dataset named by `config.data.name`."""
  name = config.data.name
  if name == "synthetic":
    return synthetic.load(config, seed)
  if name == "cifar10":
    return cifar10.load(config)
  raise errors.UserError(f"Unknown dataset {name!r}; expected one of {DATASETS}.")
