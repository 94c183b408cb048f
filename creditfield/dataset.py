"""The dataset container every study uses: train and held-out ("test") splits on device.

The held-out split is what the studies evaluate on (Phase 6 `delta_loss_heldout`, snapshot
accuracy): the synthetic task's own test draw, or CIFAR-10's official test split.
`datasets.load` makes one from the config.
"""
import dataclasses
import hashlib
from typing import Any

import numpy as np

from creditfield import student as student_lib


@dataclasses.dataclass(frozen=True)
class Dataset:
  name: str
  task: str
  num_outputs: int
  x_train: Any
  y_train: Any
  x_test: Any
  y_test: Any
  fingerprint: str
  image_shape: tuple[int, ...] | None = None  # (H, W, C) of flattened images, if any

  @property
  def in_dim(self) -> int:
    return int(self.x_train.shape[-1])


def fingerprint_arrays(*arrays) -> str:
  digest = hashlib.sha256()
  for a in arrays:
    a = np.asarray(a)
    digest.update(str((a.shape, a.dtype)).encode())
    digest.update(np.ascontiguousarray(a).tobytes())
  return digest.hexdigest()[:16]


def student_spec(config, dataset: Dataset) -> student_lib.StudentSpec:
  s = config.student
  return student_lib.StudentSpec(
      in_dim=dataset.in_dim, width=s.width, depth=s.depth,
      num_outputs=dataset.num_outputs, expansion=s.expansion, task=dataset.task)
