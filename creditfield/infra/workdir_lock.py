"""One writer per workdir: a lock held for a run's lifetime.

`fcntl.flock` on `<workdir>/.lock`: the kernel releases it when its holder dies, so a lock left
by a killed run is taken over (and said so, from the PID the file still names); a second live
process is refused with the holder's PID. In a multi-host run only the writing process (0)
locks: the others write checkpoints alongside it by design.
"""
import contextlib
import fcntl
import os

from absl import logging

from creditfield.infra import distributed
from creditfield.infra import errors
from creditfield.infra import outputs


class WorkdirLockedError(errors.UserError):
  """Another live process is running in this workdir."""


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except (ProcessLookupError, ValueError):
    return False
  except PermissionError:
    return True
  return True


@contextlib.contextmanager
def held(workdir: str):
  """Holds the workdir's lock inside the block; raises WorkdirLockedError if another process
  holds it."""
  if not distributed.is_writer():
    yield
    return
  outputs.make_folder(workdir)
  path = os.path.join(workdir, ".lock")
  fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    previous = os.read(fd, 64).decode(errors="replace").strip()
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise WorkdirLockedError(
          f"The workdir {workdir} is in use by another run (process {previous or 'unknown'}; "
          f"lock {path}). Wait for it to finish, stop it, or choose another --workdir.") from None
    if previous.isdigit() and int(previous) != os.getpid() and not _pid_alive(int(previous)):
      logging.warning("Took over the lock of %s left by process %s, which is no longer running.",
                      workdir, previous)
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    try:
      yield
    finally:
      fcntl.flock(fd, fcntl.LOCK_UN)
  finally:
    os.close(fd)
