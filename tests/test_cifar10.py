"""CIFAR-10 through the project's TFDS builder (real, on a tiny image folder) and TFDS's cifar10."""
import os

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from creditfield import cifar10
from creditfield import config_defaults
from creditfield import sampling


def _write_folder(root, per_class=2, classes=cifar10.CLASSES):
  rng = np.random.default_rng(0)
  for split in ("train", "test"):
    for cls in classes:
      os.makedirs(root / split / cls, exist_ok=True)
      for i in range(per_class):
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / split / cls / f"{i:04d}.png")
  return root


def _config(tmp_path, data_dir="", tfds_dir=None):
  c = config_defaults.base_config()
  c.data.dir = str(data_dir)
  c.data.tfds_data_dir = str(tfds_dir or tmp_path / "tfds")
  return c


def test_image_folder_goes_through_the_real_builder(tmp_path):
  root = _write_folder(tmp_path / "images")
  data = cifar10.load(_config(tmp_path, root))
  assert data.x_train.shape == (20, 3072) and data.x_test.shape == (20, 3072)
  assert sorted(np.asarray(data.y_train).tolist()) == sorted(list(range(10)) * 2)
  np.testing.assert_allclose(np.asarray(data.x_train).reshape(20, 32, 32, 3).mean((0, 1, 2)),
                             0.0, atol=1e-5)  # per-channel normalisation from training stats
  original = np.asarray(Image.open(root / "train" / "bird" / "0001.png"))
  restored = cifar10._read_split(  # pylint: disable=protected-access
      cifar10.image_folder_builder(str(root), str(tmp_path / "tfds"))[0], "train")
  assert any(np.array_equal(original, img) for img in restored[0])
  assert os.listdir(tmp_path / "tfds" / "image_folder_cifar10")  # prepared as a TFDS cache


def test_a_changed_source_is_prepared_again(tmp_path):
  root = _write_folder(tmp_path / "images")
  first = cifar10.load(_config(tmp_path, root)).fingerprint
  assert cifar10.load(_config(tmp_path, root)).fingerprint == first  # cached
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "train" / "bird" / "0009.png")
  second = cifar10.load(_config(tmp_path, root))
  assert second.fingerprint != first and second.x_train.shape[0] == 21
  assert len(os.listdir(tmp_path / "tfds" / "image_folder_cifar10")) == 2


def test_a_later_run_reads_the_decoded_splits_its_source_left(tmp_path, monkeypatch):
  root = _write_folder(tmp_path / "images")
  first = cifar10.load(_config(tmp_path, root))
  assert os.path.exists(cifar10.decoded_path(str(tmp_path / "tfds"), first.fingerprint))

  def unread(*unused):
    raise AssertionError("the records were read again")
  monkeypatch.setattr(cifar10, "_read_split", unread)
  again = cifar10.load(_config(tmp_path, root))
  for name in ("x_train", "y_train", "x_test", "y_test"):
    np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
  # A changed source has another fingerprint, so its records are read (not the old arrays).
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "train" / "bird" / "0009.png")
  with pytest.raises(cifar10.DataError, match="read again"):
    cifar10.load(_config(tmp_path, root))


def test_tfds_cifar10_is_read_the_same_way_under_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=12):
    data = cifar10.load(_config(tmp_path, tfds_dir=tmp_path / "tfds_prepared"))
  assert data.x_train.shape == (12, 3072) and data.num_outputs == 10
  assert data.fingerprint.startswith("tfds_cifar10_")


@pytest.mark.parametrize("case", ["missing", "empty", "no_test_split", "unknown_class",
                                  "missing_class", "unreadable_image", "no_source"])
def test_bad_data_directories_are_clear_errors(tmp_path, case):
  root = tmp_path / "images"
  if case == "empty":
    root.mkdir()
  elif case != "missing":
    _write_folder(root)
  if case == "no_test_split":
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(root / "test")
  elif case == "unknown_class":
    (root / "train" / "dragon").mkdir()
  elif case == "missing_class":  # once trained on 9 classes without a word
    import shutil  # pylint: disable=g-import-not-at-top
    shutil.rmtree(root / "test" / "truck")
  elif case == "unreadable_image":
    (root / "train" / "bird" / "0005.jpg").write_bytes(b"not a jpeg")
  expected = {"missing": "does not exist", "empty": "is empty", "no_test_split": "no test/",
              "unknown_class": "Unknown class folder", "missing_class": "class\\(es\\) truck",
              "unreadable_image": "Cannot read image",
              "no_source": "No CIFAR-10 source"}[case]
  config = _config(tmp_path, "" if case == "no_source" else root)
  if case == "no_source":
    config.data.tfds_data_dir = ""
  with pytest.raises(cifar10.DataError, match=expected) as info:
    cifar10.load(config)
  assert "synthetic" in str(info.value)


def test_augmentation_flips_and_crops_images_only():
  import jax  # pylint: disable=g-import-not-at-top
  x = jax.random.normal(jax.random.PRNGKey(0), (64, 4 * 4 * 3))
  flipped = sampling.augment(jax.random.PRNGKey(1), x, (4, 4, 3), "flip")
  same = np.all(np.asarray(flipped == x), axis=1)
  mirrored = np.all(np.asarray(flipped.reshape(-1, 4, 4, 3) ==
                               x.reshape(-1, 4, 4, 3)[:, :, ::-1]), axis=(1, 2, 3))
  assert np.all(same | mirrored) and 10 < same.sum() < 54
  cropped = sampling.augment(jax.random.PRNGKey(1), x, (4, 4, 3), "flip_crop", pad=1)
  assert cropped.shape == x.shape and not np.allclose(cropped, flipped)
  with pytest.raises(ValueError, match="needs image data"):
    sampling.augment(jax.random.PRNGKey(1), x, None, "flip")


def test_fingerprint_is_of_the_content_not_the_location_or_mtimes(tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  root = _write_folder(tmp_path / "images")
  listing = cifar10.list_image_folder(str(root))
  first = cifar10.source_fingerprint(str(root), listing, str(tmp_path / "cache"))
  time.sleep(0.01)
  copy = tmp_path / "elsewhere" / "cifar"
  shutil.copytree(root, copy, copy_function=shutil.copy)  # new path, new mtimes
  assert cifar10.source_fingerprint(str(copy), cifar10.list_image_folder(str(copy)),
                                    str(tmp_path / "other_cache")) == first
  Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(copy / "test" / "bird" / "0000.png")
  assert cifar10.source_fingerprint(str(copy), cifar10.list_image_folder(str(copy)),
                                    str(tmp_path / "other_cache")) != first


def test_normalise_equals_the_float64_per_pixel_reference():
  rng = np.random.default_rng(3)
  train = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
  train[..., 2] //= 4  # channels of different statistics
  test = rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8)
  scaled = train.astype(np.float64) / 255.0
  mean = scaled.mean(axis=(0, 1, 2)).astype(np.float32)
  std = scaled.std(axis=(0, 1, 2)).astype(np.float32)
  reference = lambda a: ((a.astype(np.float32) / 255.0 - mean) / std).reshape(len(a), -1)
  got_train, got_test = cifar10.normalise(train, test)
  np.testing.assert_allclose(got_train, reference(train), rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(got_test, reference(test), rtol=1e-6, atol=1e-6)
  assert got_train.dtype == np.float32 and got_train.shape == (64, 3072)
