"""Tests of keras_vae.data.folder: image folders (formats, splits, unreadable files)."""

import logging
import os

import numpy as np
import pytest
from data_helpers import assert_k_over_255, batches, images_of
from PIL import Image

from keras_vae import data
from keras_vae.config import DataError, UsageError
from keras_vae.data import folder


def _name_in(split, stem, extension):
    """A file name (stem + counter + extension) that the hash puts in `split`."""
    for k in range(1000):
        name = f"{stem}{k}{extension}"
        if folder.split_of(name) == split:
            return name
    raise AssertionError("unreachable")


# Planted files with constant colours, all in the train split.
SPECIAL = {
    "gray": (_name_in("train", "a/gray", ".png"), (77, 77, 77)),
    "rgba": (_name_in("train", "a/b/rgba", ".png"), (10, 20, 30)),
    "png16": (_name_in("train", "c/deep", ".png"), (156, 156, 156)),  # 40000 >> 8
    "bmp": (_name_in("train", "c/bitmap", ".bmp"), (200, 100, 50)),
    "upper": (_name_in("train", "a/upper", ".PNG"), (5, 250, 5)),
    "wide": (_name_in("train", "wide", ".png"), (120, 60, 30)),  # 64 x 96, sides differ
}


CORRUPT = sorted(
    _name_in("train", f"bad{i}_", ext)
    for i, ext in enumerate([".jpg", ".png", ".jpeg", ".bmp"] * 3)
)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """~100 files in nested folders: plain RGB PNG/JPEG, planted formats, 12 corrupt ones."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    plain = []
    for i in range(90):
        name = f"{['', 'a/', 'a/b/'][i % 3]}img_{i:03d}{'.jpg' if i % 10 == 0 else '.png'}"
        os.makedirs(root / os.path.dirname(name), exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(root / name)
        plain.append(name)
    for directory in ("a/b", "c"):
        os.makedirs(root / directory, exist_ok=True)
    Image.fromarray(np.full((64, 64), 77, np.uint8)).save(root / SPECIAL["gray"][0])
    Image.fromarray(np.full((64, 64, 4), (10, 20, 30, 128), np.uint8)).save(
        root / SPECIAL["rgba"][0]
    )
    Image.fromarray(np.full((64, 64), 40000, np.uint16)).save(root / SPECIAL["png16"][0])
    assert Image.open(root / SPECIAL["png16"][0]).mode.startswith("I;16")
    Image.fromarray(np.full((64, 64, 3), (200, 100, 50), np.uint8)).save(root / SPECIAL["bmp"][0])
    Image.fromarray(np.full((64, 64, 3), (5, 250, 5), np.uint8)).save(
        root / SPECIAL["upper"][0], format="PNG"
    )
    wide = np.zeros((64, 96, 3), np.uint8)
    wide[:, 16:80] = (120, 60, 30)  # the central 64 x 64 square
    Image.fromarray(wide).save(root / SPECIAL["wide"][0])
    # Unreadable: garbage, empty, truncated JPEG / PNG (valid headers).
    jpeg = (root / plain[0]).read_bytes()
    png = (root / plain[1]).read_bytes()
    payloads = [b"not an image", b"", jpeg[: len(jpeg) // 2], png[: len(png) // 2]]
    for i, name in enumerate(CORRUPT):
        (root / name).write_bytes(payloads[i % 4])
    (root / "notes.txt").write_text("not an image and not listed")
    good = plain + [name for name, _ in SPECIAL.values()]
    return root, good


def test_folder_counts_formats_and_one_warning(image_folder, caplog):
    root, good = image_folder
    expected_counts = {s: sum(folder.split_of(n) == s for n in good) for s in data.SPLITS}
    assert min(expected_counts.values()) > 0
    with caplog.at_level(logging.WARNING):
        ds, info = data.load(f"folder:{root}", "train", batch_size=16, shuffle=False)
    warnings = [r for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert message.startswith(
        f"Skipped 12 unreadable image file(s) of {expected_counts['train'] + 12}"
    )
    assert ", ".join(CORRUPT[:10]) + " and 2 more" in message
    assert info.num_examples == expected_counts["train"]
    assert info.image_shape == (64, 64, 3) and info.label_names == ()
    images = images_of(ds)
    assert images.shape == (expected_counts["train"], 64, 64, 3)
    assert_k_over_255(images)
    # Every planted file is found as a constant image of its expected colour:
    # gray replicated, alpha dropped, 16 -> 8 bits, BMP, .PNG, center crop.
    for _, colour in SPECIAL.values():
        target = np.float32(colour) / np.float32(255)
        assert np.any(np.all(images == target, axis=(1, 2, 3))), colour
    total = info.num_examples
    for split in ("validation", "test"):
        split_ds, split_info = data.load(f"folder:{root}", split, batch_size=16)
        assert split_info.num_examples == expected_counts[split]
        assert len(images_of(split_ds)) == expected_counts[split]
        total += split_info.num_examples
    assert total == len(good) == 96


def test_folder_gray_channel_and_labels(image_folder):
    root, _ = image_folder
    ds, info = data.load(
        f"folder:{root}",
        "train",
        batch_size=128,
        channels=1,
        image_size=32,
        shuffle=False,
        with_labels=True,
    )
    ((images, labels),) = batches(ds)
    assert info.image_shape == (32, 32, 1) and images.shape[1:] == (32, 32, 1)
    assert labels == {}
    assert np.any(np.all(images == np.float32(77) / np.float32(255), axis=(1, 2, 3)))
    with pytest.raises(UsageError, match="Received: channels=2"):
        data.load(f"folder:{root}", "train", batch_size=8, channels=2)


def test_folder_strict_names_the_first_unreadable_file(image_folder):
    root, _ = image_folder
    with pytest.raises(DataError) as caught:
        data.load(f"folder:{root}", "train", batch_size=8, strict=True)
    message = str(caught.value)
    assert message.startswith(f"Cannot read image file {os.path.join(root, CORRUPT[0])} (")
    assert "Remove the file, or drop --strict_data" in message and "\n" not in message
    # The clean splits load under strict.
    assert data.load(f"folder:{root}", "test", batch_size=8, strict=True)[1].num_examples > 0


def test_folder_missing_empty_and_unreadable(tmp_path):
    with pytest.raises(DataError, match="does not exist: expected a folder of jpg/jpeg/png/bmp"):
        data.load(f"folder:{tmp_path / 'nowhere'}", "train", batch_size=8)
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(DataError) as caught:
        data.load(f"folder:{empty}", "train", batch_size=8)
    assert str(caught.value) == (
        f"Image folder {empty} holds no image file: expected a folder of jpg/jpeg/png/bmp "
        "images (searched recursively)."
    )
    broken = tmp_path / "broken"
    broken.mkdir()
    name = _name_in("train", "x", ".jpg")
    (broken / name).write_bytes(b"\xff\xd8 garbage")
    with pytest.raises(DataError, match="no readable image in the train split"):
        data.load(f"folder:{broken}", "train", batch_size=8)
    with pytest.raises(DataError, match="none in the test split"):
        data.load(f"folder:{broken}", "test", batch_size=8)


def test_folder_split_is_a_stable_hash_of_the_name():
    # Golden: the split must not change between machines or releases.
    assert [folder.split_of(f"img_align_celeba/{i:06d}.jpg") for i in (1, 11, 13, 23, 33)] == [
        "train",
        "validation",
        "test",
        "validation",
        "test",
    ]
    assert folder.split_of("a/b/c.png") == folder.split_of(os.path.join("a", "b", "c.png"))
    names = [f"dir{i % 7}/face_{i}.jpg" for i in range(20_000)]
    splits = np.array([folder.split_of(name) for name in names])
    # 20,000 names: std of a 5% share is 0.15%; 1% is 6.5 std.
    assert abs(np.mean(splits == "train") - 0.90) < 0.01
    assert abs(np.mean(splits == "validation") - 0.05) < 0.01
    assert abs(np.mean(splits == "test") - 0.05) < 0.01


def test_folder_splits_are_disjoint_and_independent_of_listing(image_folder):
    root, good = image_folder
    listed = folder.list_images(str(root))
    assert listed == sorted(listed) and "notes.txt" not in listed
    assert set(good) | set(CORRUPT) == set(listed)
    shuffled = list(reversed(listed))
    by_split = {s: {n for n in shuffled if folder.split_of(n) == s} for s in data.SPLITS}
    assert sum(map(len, by_split.values())) == len(listed)
    assert not (by_split["train"] & by_split["validation"])
    assert not (by_split["train"] & by_split["test"])
    assert not (by_split["validation"] & by_split["test"])
