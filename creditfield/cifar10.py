"""CIFAR-10 through tensorflow-datasets' NumPy path: no TensorFlow needed.

Two sources, both read random-access as NumPy with `as_data_source` from a TFDS
data_dir prepared as `array_record`:
  * an image-folder copy `<dir>/{train,test}/<class>/<image>` (`--config.data.dir`),
    prepared once by `ImageFolderCifar10`, a small TFDS builder of this project,
    into the cache `--config.data.tfds_data_dir` (default ~/.cache/creditfield/tfds).
    The builder config is named by a fingerprint of the source's content (every file's
    relative path, label and bytes), so a changed source is prepared anew and the same
    files give the same fingerprint on every machine;
  * TFDS's own `cifar10`, already prepared as array_record in
    `--config.data.tfds_data_dir` (prepare it with TFDS where there is internet).
An image-folder source's decoded splits are also kept beside its records
(`creditfield_decoded/<fingerprint>.npz`), so a later run reads them at once.
Images are scaled to [0, 1], normalised per channel with the training split's
mean and std, and flattened to 3072 features for the MLP student. The held-out
split is CIFAR-10's test split.
"""
import functools
import hashlib
import json
import os
from typing import Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from creditfield import dataset as dataset_lib
from creditfield.infra import distributed
from creditfield.infra import errors

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")
SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
DEFAULT_CACHE = os.path.join(os.path.expanduser("~"), ".cache", "creditfield", "tfds")
_OPTIONS = ("Point --config.data.dir at an image-folder copy such as ../shared/data/cifar10, "
            "or --config.data.tfds_data_dir at a TFDS data_dir holding a prepared cifar10 "
            "(array_record), or run on the embedded task with the `synthetic` config arg "
            "(e.g. --config=configs/phase6c.py:synthetic).")


class DataError(errors.UserError):
  """The CIFAR-10 source is missing, empty, laid out wrongly or unreadable."""


def _tfds():
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise DataError("CIFAR-10 needs tensorflow-datasets: pip install -e '.[cifar]'. "
                    + _OPTIONS) from e
  return tfds


def list_image_folder(root: str) -> dict[str, list[tuple[str, int]]]:
  """{split: [(relative path, label)]}, checking the layout; raises DataError naming the path."""
  if not root or not os.path.isdir(root):
    raise DataError(f"CIFAR-10 image folder {root!r} does not exist. Expected "
                    f"<dir>/{{train,test}}/<class>/<image>. {_OPTIONS}")
  if not os.listdir(root):
    raise DataError(f"CIFAR-10 image folder {root} is empty. Expected "
                    f"<dir>/{{train,test}}/<class>/<image>. {_OPTIONS}")
  out = {}
  for split in SPLITS:
    split_dir = os.path.join(root, split)
    if not os.path.isdir(split_dir):
      raise DataError(f"{root} has no {split}/ folder: expected <dir>/{{train,test}}/<class>/"
                      f"<image> with classes {', '.join(CLASSES)}. {_OPTIONS}")
    files = []
    for cls in sorted(os.listdir(split_dir)):
      cls_dir = os.path.join(split_dir, cls)
      if not os.path.isdir(cls_dir):
        raise DataError(f"{cls_dir} is not a class folder: {split}/ must hold only the class "
                        f"folders {', '.join(CLASSES)}. {_OPTIONS}")
      if cls not in CLASSES:
        raise DataError(f"Unknown class folder {cls_dir}; CIFAR-10's classes are "
                        f"{', '.join(CLASSES)}. {_OPTIONS}")
      names = sorted(n for n in os.listdir(cls_dir) if n.lower().endswith(IMAGE_SUFFIXES))
      files += [(os.path.join(split, cls, n), CLASSES.index(cls)) for n in names]
    if not files:
      raise DataError(f"{split_dir} holds no images ({', '.join(IMAGE_SUFFIXES)}). {_OPTIONS}")
    present = {label for _, label in files}
    missing = [c for i, c in enumerate(CLASSES) if i not in present]
    if missing:  # a study on fewer classes would report numbers of another task
      raise DataError(f"{split_dir} has no images of the class(es) {', '.join(missing)}: "
                      f"CIFAR-10 needs all ten classes in both splits. {_OPTIONS}")
    out[split] = files
  return out


def source_fingerprint(root: str, listing: dict, cache_dir: str) -> str:
  """A hash of the source's content: every image's relative path, label and bytes.

  Equal on every machine for the same files, wherever they are unpacked. Reading 60,000
  files takes seconds, so the result is cached in `cache_dir/fingerprints.json` under a key
  of the files' location, sizes and mtimes; a changed file changes that key.
  """
  stat_digest = hashlib.sha256(os.path.abspath(root).encode())
  for split in SPLITS:
    for rel, label in listing[split]:
      st = os.stat(os.path.join(root, rel))
      stat_digest.update(f"{rel}\0{label}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
  cache_path = os.path.join(cache_dir, "fingerprints.json")
  cache = {}
  if os.path.exists(cache_path):
    with open(cache_path) as f:
      cache = json.load(f)
  key = stat_digest.hexdigest()
  if key not in cache:
    digest = hashlib.sha256()
    for split in SPLITS:
      for rel, label in listing[split]:
        with open(os.path.join(root, rel), "rb") as f:
          digest.update(f"{split}/{rel}\0{label}\0".encode() + f.read())
    cache[key] = digest.hexdigest()[:16]
    os.makedirs(cache_dir, exist_ok=True)
    with open(cache_path + ".tmp", "w") as f:
      json.dump(cache, f)
    os.replace(cache_path + ".tmp", cache_path)
  return cache[key]


def read_image(path: str) -> np.ndarray:
  from PIL import Image  # pylint: disable=g-import-not-at-top
  try:
    with Image.open(path) as im:
      array = np.asarray(im.convert("RGB"), dtype=np.uint8)
  except Exception as e:  # PIL raises several types for corrupt files.
    raise DataError(f"Cannot read image {path}: {type(e).__name__}: {e}. Replace or remove "
                    f"the file. {_OPTIONS}") from e
  if array.shape != (32, 32, 3):
    raise DataError(f"Image {path} has shape {array.shape}; CIFAR-10 images are 32x32 RGB. "
                    f"{_OPTIONS}")
  return array


@functools.cache
def _builder_class():
  """The TFDS builder class, defined once (and lazily, so tfds stays optional)."""
  tfds = _tfds()

  class ImageFolderCifar10(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """CIFAR-10 from an image-folder copy; its builder config names the source fingerprint."""
    # 1.1.0: images stored as raw bytes (`encoding="bytes"`), not TFDS's default list of 3,072
    # integers: the same records, serialized 13x and read 2x faster (a 1.0.0 copy stays in its
    # own folder; the first run of 1.1.0 prepares anew).
    VERSION = tfds.core.Version("1.1.0")

    def __init__(self, *, root: str, listing: dict, **kwargs):
      self._root, self._listing = root, listing
      super().__init__(**kwargs)

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Tensor(shape=(32, 32, 3), dtype=np.uint8, encoding="bytes"),
          "label": tfds.features.ClassLabel(names=CLASSES)}),
          description=f"CIFAR-10 image folder {self._root}")

    def _split_generators(self, dl_manager):
      del dl_manager
      return {split: self._generate_examples(self._listing[split]) for split in SPLITS}

    def _generate_examples(self, files: Sequence[tuple[str, int]]):
      for rel, label in files:
        yield rel, {"image": read_image(os.path.join(self._root, rel)), "label": label}

  return ImageFolderCifar10


def image_folder_builder(root: str, data_dir: str):
  """A TFDS builder that prepares the image folder at `root` as array_record."""
  tfds = _tfds()
  listing = list_image_folder(root)
  fingerprint = source_fingerprint(root, listing, data_dir)
  builder = _builder_class()(
      root=os.path.abspath(root), listing=listing, data_dir=data_dir,
      config=tfds.core.BuilderConfig(name=f"source_{fingerprint}"), file_format="array_record")
  return builder, fingerprint


def _read_split(builder, split: str) -> tuple[np.ndarray, np.ndarray]:
  """All records of a split, in index order, as (uint8 images, int32 labels)."""
  source = builder.as_data_source(split=split)
  n = len(source)
  images = np.empty((n, 32, 32, 3), np.uint8)
  labels = np.empty((n,), np.int32)
  for i in range(n):
    record = source[i]
    images[i], labels[i] = record["image"], record["label"]
  return images, labels


def decoded_path(data_dir: str, fingerprint: str) -> str:
  """Where the decoded splits of an image-folder source are kept, beside its TFDS records."""
  return os.path.join(data_dir, "creditfield_decoded", f"{fingerprint}.npz")


def _read_splits_via_cache(builder, path: str):
  """Both splits as (uint8 images, int32 labels): from `path`, the arrays a previous run read
  from these very records (named by the source's content fingerprint), else read record by
  record (seconds for CIFAR-10 against 0.2 s) and kept there."""
  if os.path.exists(path):
    with np.load(path) as f:
      return [(f[f"x_{split}"], f[f"y_{split}"]) for split in SPLITS]
  splits = [_read_split(builder, split) for split in SPLITS]
  if distributed.is_writer():
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"  # written whole, then renamed: a reader never sees half
    with open(tmp, "wb") as f:
      np.savez(f, **{f"{xy}_{split}": a for split, pair in zip(SPLITS, splits)
                     for xy, a in zip("xy", pair)})
    os.replace(tmp, path)
  return splits


def normalise(train_u8, test_u8):
  """[0, 1] scaling, per-channel standardisation with training statistics, flattening: device
  arrays, computed on the device from the uint8 images (a quarter of float32's transfer; on 2
  CPU cores 1.2–1.4 s against 2.3–3.9 s in NumPy with the transfer)."""
  train, test = jnp.asarray(train_u8), jnp.asarray(test_u8)
  # The statistics from each channel's histogram, exact in integers (a float32 sum over 51M
  # pixels saturates); each of the 256 values of a channel then maps through one float32
  # table, the arithmetic of doing it per pixel.
  counts = np.asarray(_channel_histograms(train), np.int64)
  num_pixels = counts[0].sum()
  values = np.arange(256, dtype=np.int64)
  mean = (counts @ values) / (255.0 * num_pixels)
  std = np.sqrt((counts @ values**2) / (255.0**2 * num_pixels) - mean**2)
  table = (np.arange(256, dtype=np.float32)[:, None] / np.float32(255.0)
           - mean.astype(np.float32)) / std.astype(np.float32)
  return _through_table(train, table), _through_table(test, table)


@jax.jit
def _channel_histograms(x_u8):
  """(N, ..., 3) uint8 images -> (3, 256) int32 counts of each channel's values."""
  return jnp.zeros((3, 256), jnp.int32).at[
      jnp.arange(3), x_u8.reshape(-1, 3).astype(jnp.int32)].add(1)


@jax.jit
def _through_table(x_u8, table):
  """(N, 32, 32, 3) uint8 images -> (N, 3072) float32: each channel's value through `table`."""
  return table[x_u8.astype(jnp.int32), jnp.arange(3)].reshape(x_u8.shape[0], -1)


def load(config) -> dataset_lib.Dataset:
  """CIFAR-10 as a `Dataset` from `config.data.dir` or a prepared TFDS `cifar10`."""
  tfds = _tfds()
  data_dir = config.data.tfds_data_dir or DEFAULT_CACHE
  if config.data.dir:
    builder, fingerprint = image_folder_builder(config.data.dir, data_dir)
    source = f"image folder {os.path.abspath(config.data.dir)}"
    if distributed.is_writer():  # in a multi-host run, process 0 prepares; the others wait
      if not builder.is_prepared():
        logging.info("Preparing %s into %s (once per source fingerprint).", source, data_dir)
      builder.download_and_prepare()
    distributed.barrier("cifar10 prepared")
  else:
    if not config.data.tfds_data_dir:
      raise DataError(f"No CIFAR-10 source given. {_OPTIONS}")
    builder = tfds.builder("cifar10", data_dir=config.data.tfds_data_dir)
    fingerprint, source = f"tfds_cifar10_{builder.version}", f"TFDS cifar10 {builder.version}"
  try:
    if config.data.dir:
      (x_train, y_train), (x_test, y_test) = _read_splits_via_cache(
          builder, decoded_path(data_dir, fingerprint))
    else:
      (x_train, y_train), (x_test, y_test) = (_read_split(builder, s) for s in SPLITS)
  except DataError:
    raise
  except Exception as e:  # TFDS raises several types for a missing or unprepared dataset.
    raise DataError(f"Cannot read {source} from {data_dir}: {type(e).__name__}: {e}. "
                    f"{_OPTIONS}") from e
  x_train, x_test = normalise(x_train, x_test)
  logging.info("CIFAR-10 from %s: %d train, %d test.", source, len(y_train), len(y_test))
  return dataset_lib.Dataset(
      name="cifar10", task="classification", num_outputs=len(CLASSES),
      x_train=x_train, y_train=jnp.asarray(y_train),
      x_test=x_test, y_test=jnp.asarray(y_test), fingerprint=fingerprint,
      image_shape=(32, 32, 3))
