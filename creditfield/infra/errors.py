"""The project's own user errors: what the user must change, reported as one paragraph.

`experiments/main.py` prints these without a traceback and exits 1; every other exception
(an internal bug, an error inside JAX) keeps its traceback.
"""


class UserError(ValueError):
  """A bad config value, a missing or unfit file, a workdir of another run: the message
  says what happened and what to do."""
