r"""Runs one creditfield study: a config file in, a workdir of results out.

  python experiments/main.py --config=configs/phase1.py:synthetic --workdir=/tmp/phase1
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from creditfield.infra import cli
from creditfield.infra import compilation
from creditfield.infra import run as run_lib

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "A config file in configs/, with optional :args.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the run's outputs.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  logging.set_verbosity(logging.INFO)
  # Orbax logs every save at INFO; keep the progress lines readable.
  logging.get_absl_handler().addFilter(lambda record: "orbax" not in record.pathname)
  run_lib.main(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
  compilation.set_default_xla_flags()  # before the first computation starts a backend
  app.run(main, flags_parser=cli.parse_flags)
