"""The exceptions that mean "the user must change something", reported without a traceback."""
from creditfield import checkpoints
from creditfield import outputs
from creditfield import training_loop

USER_ERRORS = (ValueError, FileNotFoundError, checkpoints.SnapshotError,
               outputs.WorkdirConflictError, training_loop.NonFiniteError)
