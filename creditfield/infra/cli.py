"""The command line's own errors: a bad --config file, `:arg` or override is one paragraph.

absl parses `--config=FILE[:args]` and `--config.key=value` before `main` runs, so their
errors would end a traceback; `parse_flags` (the `flags_parser` of experiments/main.py)
turns them into one `creditfield error:` paragraph naming the file or key, with a
suggestion or the valid choices, and exit status 2. Errors inside a study keep their
tracebacks unless they are the project's own user errors (run.main).
"""
import difflib
import os
import re
import sys

from absl import flags

from creditfield import config_defaults

CONFIG_FLAG = "config"


def _config_path_and_arg(argv):
  for a in argv:
    if a.startswith(f"--{CONFIG_FLAG}="):
      path, _, arg = a.split("=", 1)[1].partition(":")
      return path, arg
  return None, None


def _keys(config, prefix=""):
  for key, value in config.items():
    if hasattr(value, "items"):
      yield from _keys(value, f"{prefix}{key}.")
    else:
      yield f"{prefix}{key}"


def _available_configs(path) -> str:
  folder = os.path.dirname(path) or "."
  names = sorted(n for n in os.listdir(folder) if n.endswith(".py")) if os.path.isdir(
      folder) else []
  return f" Config files in {folder}/: {', '.join(names)}." if names else ""


def _unknown_override(argv, path, arg) -> str:
  """'--config.x: ... Did you mean ...?' for the first override naming no key, or ''."""
  try:
    known = list(_keys(config_defaults.load(path, arg)))
  except Exception:  # pylint: disable=broad-except
    return ""
  for a in argv:
    if a.startswith(f"--{CONFIG_FLAG}."):
      key = a.split("=", 1)[0][len(CONFIG_FLAG) + 3:]
      if key not in known:
        close = difflib.get_close_matches(key, known, n=3)
        hint = f" Did you mean {' or '.join(close)}?" if close else ""
        return (f"--{CONFIG_FLAG}.{key}: {path} has no key {key!r}.{hint} Overrides name an "
                "existing key of the config, e.g. --config.seed=3.")
  return ""


def message(error: Exception, argv) -> str:
  """One paragraph for an error raised while parsing the flags."""
  path, arg = _config_path_and_arg(argv)
  override = _unknown_override(argv, path, arg) if path else ""
  if override:
    return override
  lines = [line.strip() for line in str(error).splitlines() if line.strip()]
  # ml_collections wraps errors of get_config() in their traceback; the last line is the cause.
  cause = lines[-1] if lines else type(error).__name__
  cause = re.sub(r"^[\w.]*(Error|Exception): ", "", cause)  # the exception's type is noise here
  if "Error whilst parsing config file" in str(error):
    return f"{path}{':' + arg if arg else ''} could not be loaded: {cause}"
  return " ".join(lines)


def parse_flags(argv):
  """`flags.FLAGS(argv)`, with parsing errors as one paragraph and exit status 2."""
  path, _ = _config_path_and_arg(argv)
  given = [a for a in argv if a.startswith(f"--{CONFIG_FLAG}=")]
  if len(given) > 1:  # absl would keep the last one silently
    _exit(f"--{CONFIG_FLAG} is given {len(given)} times ({', '.join(given)}); give one config "
          f"file, and change its values with --{CONFIG_FLAG}.key=value.")
  if path and not os.path.isfile(path):
    _exit(f"Config file {path} does not exist.{_available_configs(path)}")
  if path and not path.endswith(".py"):
    _exit(f"{path} is not a config file: a config is a Python file with get_config(), such as "
          f"configs/phase6c.py.{_available_configs(path)}")
  try:
    return flags.FLAGS(argv)
  except (flags.Error, OSError, ValueError, KeyError, AttributeError) as e:
    _exit(message(e, argv))


def _exit(text: str):
  sys.stderr.write(f"\ncreditfield error: {text}\n")
  sys.exit(2)
