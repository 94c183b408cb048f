"""creditfield: learned credit assignment for residual networks, without hidden backprop."""
__version__ = "0.1.0"


def load_snapshot(path, step=None):
  """Restores a BP snapshot: `.params`, `.spec`, `.config`, `.meta` (see checkpoints)."""
  from creditfield.infra import checkpoints  # pylint: disable=g-import-not-at-top
  return checkpoints.load_snapshot(path, step)
