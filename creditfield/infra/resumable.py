"""Resumable training units: the state of a long loop saved at chunk boundaries, and the
record of a finished unit, so a stopped study resumes where it stopped (issue 28).

A unit (local training's group of students, an estimator's training, a credit-quality entry)
lives in a folder of its own:
  progress.json   {"step", "extra"}: the newest saved state's step, and what the caller keeps
                  with it (its curve so far); written once that state is complete
  state_<step>/   the state (Orbax); the previous one is deleted once the next is written
  finished.json   the caller's record of the finished unit; a rerun skips the unit
Every step's randomness comes from its step number, and chunks start at multiples of the chunk
size, so a resumed unit ends where an uninterrupted one does (tests/test_reliability.py).
"""
import json
import os
import shutil
from typing import Any, Optional

from absl import logging

from creditfield.infra import checkpoints
from creditfield.infra import distributed
from creditfield.infra import outputs


class Unit:
  """One resumable unit under `directory`."""

  def __init__(self, directory: str):
    self.directory = directory
    self._progress_path = os.path.join(directory, "progress.json")
    self._finished_path = os.path.join(directory, "finished.json")

  def finished(self) -> Optional[Any]:
    """The record `finish` wrote, or None."""
    return _read(self._finished_path)

  def resume(self, like) -> tuple[int, Any, Any]:
    """(step, state, extra) of the newest saved state, or (0, None, None): a state that cannot
    be restored (truncated by a kill mid-save) is skipped with a warning."""
    progress = _read(self._progress_path)
    if not progress:
      return 0, None, None
    try:
      state = checkpoints.restore_tree(self._state_folder(progress["step"]), like)
    except Exception as e:  # pylint: disable=broad-except
      logging.warning("%s: the saved state at step %d cannot be restored (%s); this unit starts "
                      "again from step 0.", self.directory, progress["step"],
                      checkpoints.first_line(e))
      self.finish()  # forget it, so the new saves are not mistaken for it
      return 0, None, None
    logging.info("%s: resuming from step %d.", self.directory, progress["step"])
    return progress["step"], state, progress["extra"]

  def save(self, step: int, state, extra) -> str:
    """Saves `state` at `step` with `extra` (JSON), unless that step is saved already; returns
    the state's folder."""
    folder = self._state_folder(step)
    previous = _read(self._progress_path)
    if previous and previous["step"] == step:
      return folder
    checkpoints.save_tree(folder, state)  # every process: Orbax saves collectively
    if distributed.is_writer():
      outputs.write_text(self._progress_path, json.dumps(dict(step=step, extra=extra)))
      if previous:
        shutil.rmtree(self._state_folder(previous["step"]), ignore_errors=True)
    return folder

  def _state_folder(self, step: int) -> str:
    return os.path.join(self.directory, f"state_{step}")

  def finish(self, record=None) -> None:
    """Deletes the unit's saved states and, with a `record` (JSON), marks it finished."""
    if not distributed.is_writer():
      return
    if record is not None:
      os.makedirs(self.directory, exist_ok=True)  # a unit may finish without a saved state
      outputs.write_text(self._finished_path, json.dumps(record))
    progress = _read(self._progress_path)
    if progress:
      shutil.rmtree(self._state_folder(progress["step"]), ignore_errors=True)
      os.remove(self._progress_path)


def _read(path: str):
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)
