"""Tests of skanomclust.datasets: the synthetic generator and the folder loader."""

import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from skanomclust.datasets import load_texture_folder, make_synthetic_textures

DEFECTS = ("scratch", "spot", "hole", "stain", "crack")
TEXTURES = ("fabric", "stone", "wood")
MTD_ROOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mtd"
MTD = MTD_ROOT / "magnetic_tile"


# --------------------------------------------------------------------------- synthetic
@pytest.fixture(scope="module")
def default_data():
    return make_synthetic_textures(random_state=0)


def _small(**kwargs):
    params = {"n_normal": 6, "n_per_defect": 2, "image_size": 48, "random_state": 0}
    params.update(kwargs)
    return make_synthetic_textures(**params)


@pytest.mark.parametrize("texture", TEXTURES)
def test_synthetic_same_seed_is_byte_identical(texture):
    a = _small(texture=texture, random_state=7)
    b = _small(texture=texture, random_state=7)
    for key in ("images", "masks", "target"):
        assert a[key].tobytes() == b[key].tobytes()
    assert a.target_names == b.target_names


@pytest.mark.parametrize("texture", TEXTURES)
def test_synthetic_different_seeds_differ(texture):
    a = _small(texture=texture, random_state=1)
    b = _small(texture=texture, random_state=2)
    assert not np.array_equal(a.images, b.images)
    assert not np.array_equal(a.masks, b.masks)


def test_synthetic_accepts_random_state_instance_and_none():
    rs = np.random.RandomState(3)
    a = _small(random_state=rs)
    b = _small(random_state=np.random.RandomState(3))
    assert np.array_equal(a.images, b.images)
    assert _small(random_state=None).images.shape == a.images.shape


@pytest.mark.parametrize("texture", TEXTURES)
@pytest.mark.parametrize("image_size", [32, 64])
def test_synthetic_shapes_and_dtypes(texture, image_size):
    data = _small(texture=texture, image_size=image_size)
    n = 6 + 2 * len(DEFECTS)
    assert data.images.shape == (n, image_size, image_size, 3)
    assert data.images.dtype == np.uint8
    assert data.masks.shape == (n, image_size, image_size)
    assert data.masks.dtype == bool
    assert data.target.shape == (n,)
    assert data.target.dtype == np.int64
    assert data.target_names == ["good", *DEFECTS]
    assert isinstance(data.DESCR, str) and texture in data.DESCR


def test_synthetic_default_classes_counts_and_masks(default_data):
    data = default_data
    assert data.images.shape == (135, 128, 128, 3)
    assert data.target_names == ["good", *DEFECTS]
    assert np.bincount(data.target).tolist() == [60, 15, 15, 15, 15, 15]
    has_defect = data.masks.any(axis=(1, 2))
    np.testing.assert_array_equal(has_defect, data.target > 0)
    # Shuffled, not grouped by class.
    assert np.any(np.diff(data.target) < 0)
    assert data.target[:60].tolist() != [0] * 60


@pytest.mark.parametrize("texture", TEXTURES)
def test_synthetic_masks_cover_a_small_share(texture):
    data = make_synthetic_textures(n_normal=2, n_per_defect=6, texture=texture, random_state=0)
    share = data.masks.mean(axis=(1, 2))[data.target > 0]
    # Observed (seed 0, default settings): min 0.1%, median 0.5-1%, max 8-9% of the image.
    assert share.min() > 0.0005
    assert share.max() < 0.15
    assert np.median(share) < 0.03
    for label in range(1, len(data.target_names)):
        assert data.masks[data.target == label].any(axis=(1, 2)).all()


def test_synthetic_defect_sizes_differ_by_type(default_data):
    share = default_data.masks.mean(axis=(1, 2))
    median = {
        name: np.median(share[default_data.target == k])
        for k, name in enumerate(default_data.target_names)
    }
    assert median["spot"] < median["hole"] < median["stain"]
    assert median["scratch"] < median["stain"]


def test_synthetic_normal_images_vary(default_data):
    normal = default_data.images[default_data.target == 0].astype(float)
    diffs = [np.abs(normal[i] - normal[i + 1]).mean() for i in range(len(normal) - 1)]
    assert min(diffs) > 5.0
    means = normal.mean(axis=(1, 2))
    assert means.std(axis=0).min() > 1.0  # colour and exposure vary per image


def test_synthetic_defects_not_revealed_by_mean_colour(default_data):
    means = default_data.images.reshape(len(default_data.images), -1).mean(axis=1)
    normal = means[default_data.target == 0]
    defect = means[default_data.target > 0]
    inside = (defect >= normal.min()) & (defect <= normal.max())
    assert inside.mean() > 0.9


def test_synthetic_defect_pixels_change_the_texture(default_data):
    # Defect pixels differ from the surrounding normal texture, also for subtle ones.
    data = default_data
    for label in range(1, len(data.target_names)):
        idx = np.flatnonzero(data.target == label)
        contrast = []
        for i in idx:
            img = data.images[i].astype(float)
            mask = data.masks[i]
            contrast.append(np.abs(img[mask].mean(axis=0) - img[~mask].mean(axis=0)).max())
        assert np.median(contrast) > 10, data.target_names[label]


def test_synthetic_subset_and_zero_counts():
    data = _small(defect_types=("crack", "stain"), n_per_defect=3)
    assert data.target_names == ["good", "crack", "stain"]
    assert np.bincount(data.target).tolist() == [6, 3, 3]
    only_normal = _small(n_per_defect=0, n_normal=3)
    assert not only_normal.masks.any()
    assert only_normal.target.tolist() == [0, 0, 0]
    only_defects = _small(n_normal=0, defect_types="spot")
    assert only_defects.target_names == ["good", "spot"]
    assert only_defects.masks.any(axis=(1, 2)).all()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"defect_types": ("scratch", "dent")}, "valid types are .*scratch.*crack"),
        ({"defect_types": ("spot", "spot")}, "duplicates"),
        ({"texture": "marble"}, "valid textures"),
        ({"n_normal": -1}, "n_normal must be a non-negative integer"),
        ({"n_normal": 2.0}, "n_normal must be a non-negative integer"),
        ({"n_per_defect": True}, "n_per_defect must be a non-negative integer"),
        ({"n_normal": 1, "n_per_defect": 0}, "At least 2 images"),
        ({"n_normal": 1, "defect_types": ()}, "At least 2 images"),
        ({"image_size": 16}, "image_size must be an integer >= 32"),
    ],
)
def test_synthetic_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _small(**kwargs)


# --------------------------------------------------------------------------- loader
def _save(path, array, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **kwargs)


def _rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _mask(h, w, box):
    mask = np.zeros((h, w), dtype=np.uint8)
    r0, r1, c0, c1 = box
    mask[r0:r1, c0:c1] = 255
    return mask


@pytest.fixture
def mvtec(tmp_path):
    """A tiny MVTec AD category: 3 good, 2 'scratch', 1 'hole', masks, a train folder."""
    root = tmp_path / "tile"
    test, gt = root / "test", root / "ground_truth"
    _save(test / "good" / "001.png", _rgb(20, 30, 0))
    _save(test / "good" / "000.png", _rgb(20, 30, 1))
    gray = np.random.default_rng(2).integers(0, 256, size=(24, 30), dtype=np.uint8)
    _save(test / "good" / "002.jpg", gray, quality=95)  # grayscale JPEG, other size
    rgba = np.dstack([_rgb(20, 30, 3), np.full((20, 30), 128, np.uint8)])
    _save(test / "scratch" / "a.png", rgba)  # RGBA PNG
    _save(test / "scratch" / "b.PNG", _rgb(20, 30, 4))  # upper-case extension
    _save(test / "hole" / "x.bmp", _rgb(16, 16, 5))
    _save(gt / "scratch" / "a_mask.png", _mask(20, 30, (2, 5, 3, 20)))
    _save(gt / "scratch" / "b_mask.png", _mask(20, 30, (10, 12, 0, 30)))
    soft = _mask(16, 16, (4, 8, 4, 8)) // 2  # 127 inside the box: below the threshold
    soft[5, 5] = 128  # the only pixel > 127
    _save(gt / "hole" / "x_mask.png", soft)
    _save(root / "train" / "good" / "t0.png", _rgb(20, 30, 6))
    (test / "good" / ".hidden.png").write_bytes(b"not an image")
    (test / "good" / "notes.txt").write_text("ignored")
    (test / ".cache").mkdir()
    return root


def test_loader_mvtec_layout(mvtec):
    data = load_texture_folder(mvtec, load_images=True)
    assert data.target_names == ["good", "hole", "scratch"]
    names = [Path(f).relative_to(mvtec / "test").as_posix() for f in data.filenames]
    assert names == [
        "good/000.png",
        "good/001.png",
        "good/002.jpg",
        "hole/x.bmp",
        "scratch/a.png",
        "scratch/b.PNG",
    ]
    assert all(isinstance(f, str) for f in data.filenames)
    assert data.target.dtype == np.int64
    assert data.target.tolist() == [0, 0, 0, 1, 2, 2]
    # Masks: image-sized, boolean, empty for good, thresholded at > 127.
    assert [m.shape for m in data.masks] == [(20, 30), (20, 30), (24, 30), (16, 16)] + [
        (20, 30)
    ] * 2
    assert all(m.dtype == bool for m in data.masks)
    assert not any(m.any() for m in data.masks[:3])
    assert data.masks[3].sum() == 1 and data.masks[3][5, 5]
    assert data.masks[4].sum() == 3 * 17
    assert data.masks[5].sum() == 2 * 30
    # Images: uint8, grayscale stays 2-D, RGBA loses its alpha channel.
    assert all(im.dtype == np.uint8 for im in data.images)
    assert data.images[2].shape == (24, 30)
    assert data.images[4].shape == (20, 30, 3)
    np.testing.assert_array_equal(data.images[4], _rgb(20, 30, 3))
    np.testing.assert_array_equal(data.images[0], _rgb(20, 30, 1))
    assert "good (3)" in data.DESCR and "MVTec" in data.DESCR


def test_loader_without_images(mvtec):
    data = load_texture_folder(str(mvtec))
    assert data.images is None
    assert len(data.masks) == len(data.filenames) == 6


def test_loader_class_folders_with_sibling_ground_truth(mvtec):
    direct = load_texture_folder(mvtec / "test")
    full = load_texture_folder(mvtec)
    assert direct.filenames == full.filenames
    assert direct.target_names == full.target_names
    for a, b in zip(direct.masks, full.masks, strict=True):
        np.testing.assert_array_equal(a, b)


def test_loader_train_folder_only_when_asked(mvtec):
    files = load_texture_folder(mvtec).filenames
    assert all(Path(f).relative_to(mvtec).parts[0] == "test" for f in files)
    train = load_texture_folder(mvtec / "train")
    assert train.target_names == ["good"]
    assert train.target.tolist() == [0]
    assert not train.masks[0].any()


def test_loader_class_folders_without_masks(tmp_path):
    _save(tmp_path / "b_class" / "1.png", _rgb(8, 8, 0))
    _save(tmp_path / "a_class" / "2.png", _rgb(8, 8, 1))
    _save(tmp_path / "a_class" / "1.png", _rgb(8, 8, 2))
    data = load_texture_folder(tmp_path)
    assert data.target_names == ["a_class", "b_class"]
    assert data.target.tolist() == [0, 0, 1]
    assert [Path(f).name for f in data.filenames] == ["1.png", "2.png", "1.png"]
    assert data.masks is None
    assert data.images is None


def test_loader_class_folders_with_inner_ground_truth(tmp_path):
    _save(tmp_path / "good" / "n.png", _rgb(8, 8, 0))
    _save(tmp_path / "dent" / "d.png", _rgb(8, 8, 1))
    _save(tmp_path / "ground_truth" / "dent" / "d_mask.png", _mask(8, 8, (0, 2, 0, 2)))
    data = load_texture_folder(tmp_path)
    assert data.target_names == ["good", "dent"]
    assert [int(m.sum()) for m in data.masks] == [0, 4]


def test_loader_plain_folder_recursive(tmp_path):
    _save(tmp_path / "z.png", _rgb(8, 8, 0))
    _save(tmp_path / "sub" / "deeper" / "a.JPG", _rgb(8, 8, 1))
    _save(tmp_path / "sub" / "b.tif", _rgb(8, 8, 2))
    _save(tmp_path / "a_mask.png", _mask(8, 8, (0, 1, 0, 1)))  # a normal image here
    _save(tmp_path / "ground_truth" / "c" / "q_mask.png", _mask(8, 8, (0, 1, 0, 1)))
    _save(tmp_path / ".hidden" / "h.png", _rgb(8, 8, 3))
    (tmp_path / "readme.txt").write_text("not an image")
    data = load_texture_folder(tmp_path, load_images=True)
    names = [Path(f).relative_to(tmp_path).as_posix() for f in data.filenames]
    assert names == ["a_mask.png", "sub/b.tif", "sub/deeper/a.JPG", "z.png"]
    assert data.target is None and data.target_names is None and data.masks is None
    assert [im.shape for im in data.images] == [(8, 8), (8, 8, 3), (8, 8, 3), (8, 8, 3)]
    assert "no labels" in data.DESCR


@pytest.mark.parametrize("extensions", ["png", [".PNG"], ("png",)])
def test_loader_extensions(tmp_path, extensions):
    _save(tmp_path / "a.png", _rgb(8, 8, 0))
    _save(tmp_path / "b.jpg", _rgb(8, 8, 1))
    data = load_texture_folder(tmp_path, extensions=extensions)
    assert [Path(f).name for f in data.filenames] == ["a.png"]


def test_loader_missing_path(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(FileNotFoundError, match="nope"):
        load_texture_folder(missing)


def test_loader_file_instead_of_folder(tmp_path):
    _save(tmp_path / "a.png", _rgb(8, 8, 0))
    with pytest.raises(NotADirectoryError, match="a.png"):
        load_texture_folder(tmp_path / "a.png")


@pytest.mark.parametrize("content", [None, "notes.txt", ".hidden.png"])
def test_loader_no_images(tmp_path, content):
    folder = tmp_path / "empty_folder"
    folder.mkdir()
    if content is not None:
        (folder / content).write_text("x")
    with pytest.raises(ValueError, match="No image files.*empty_folder"):
        load_texture_folder(folder)


def test_loader_mask_size_mismatch(mvtec):
    _save(mvtec / "ground_truth" / "scratch" / "b_mask.png", _mask(21, 30, (0, 1, 0, 1)))
    with pytest.raises(ValueError, match=r"b_mask\.png.*b\.PNG"):
        load_texture_folder(mvtec)


def test_loader_missing_mask(mvtec):
    (mvtec / "ground_truth" / "scratch" / "a_mask.png").unlink()
    with pytest.raises(ValueError, match=r"No mask for defect image .*a\.png"):
        load_texture_folder(mvtec)
    # labels only: the masks are not read, so a missing one does not matter
    data = load_texture_folder(mvtec, load_masks=False)
    assert data.masks is None and len(data.target) == len(data.filenames) == 6
    assert "not read" in data.DESCR


def test_loader_unreadable_image(tmp_path):
    _save(tmp_path / "ok.png", _rgb(8, 8, 0))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG but not really")
    # Every header is checked, also without load_images (a broken file used to pass here
    # and stop the run later, after the backbone had loaded).
    for load_images in (False, True):
        with pytest.raises(ValueError, match=r"1 of 2 images cannot be read.*\n.*broken\.png"):
            load_texture_folder(tmp_path, load_images=load_images)
    with pytest.warns(UserWarning, match=r"did not read 1 entry.*\n.*broken\.png"):
        data = load_texture_folder(tmp_path, on_error="skip", load_images=True)
    assert [Path(f).name for f in data.filenames] == ["ok.png"]
    assert len(data.images) == 1
    ((path, reason),) = data.skipped
    assert Path(path).name == "broken.png" and reason.startswith("cannot be read: cannot identify")
    assert "1 entry not read" in data.DESCR


def test_loader_unreadable_labelled_image_needs_its_size(mvtec):
    (mvtec / "test" / "good" / "003.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="003.png"):
        load_texture_folder(mvtec)


def test_loader_skip_keeps_labels_and_masks_aligned(mvtec):
    (mvtec / "test" / "scratch" / "a.png").write_bytes(b"garbage")
    with pytest.raises(ValueError, match=r"a\.png': cannot be read"):
        load_texture_folder(mvtec)
    with pytest.warns(UserWarning, match=r"a\.png"):
        data = load_texture_folder(mvtec, on_error="skip", load_images=True)
    names = [Path(f).relative_to(mvtec / "test").as_posix() for f in data.filenames]
    assert names == ["good/000.png", "good/001.png", "good/002.jpg", "hole/x.bmp", "scratch/b.PNG"]
    assert data.target.tolist() == [0, 0, 0, 1, 2]
    assert [int(m.sum()) for m in data.masks] == [0, 0, 0, 1, 2 * 30]
    assert len(data.images) == 5
    assert [Path(p).name for p, _ in data.skipped] == ["a.png"]


def test_loader_skip_drops_a_class_left_without_images(mvtec):
    (mvtec / "test" / "hole" / "x.bmp").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match=r"x\.bmp"):
        data = load_texture_folder(mvtec, on_error="skip")
    assert data.target_names == ["good", "scratch"]
    assert data.target.tolist() == [0, 0, 0, 1, 1]
    assert "hole" not in data.DESCR.split("Classes:")[1]


def test_loader_images_follow_the_data_contract(tmp_path):
    gray16 = np.random.default_rng(0).integers(0, 65536, size=(6, 7), dtype=np.uint16)
    _save(tmp_path / "a_16bit.png", gray16)
    _save(tmp_path / "b_unit.tif", gray16.astype(np.float32) / 65535)
    _save(tmp_path / "c_8bit.png", _rgb(6, 7, 0))
    data = load_texture_folder(tmp_path, load_images=True)
    assert [im.dtype for im in data.images] == [np.float32, np.float32, np.uint8]
    np.testing.assert_array_equal(data.images[0], gray16 / np.float32(65535))
    np.testing.assert_allclose(data.images[1], data.images[0], atol=1e-7)
    # a float TIFF holding 0-255: the header is fine, the pixels are not; float images
    # are decoded to check them even without load_images (before any backbone work)
    _save(tmp_path / "d_scaled.tif", np.full((6, 7), 200.0, dtype=np.float32))
    for load_images in (False, True):
        with pytest.raises(
            ValueError, match=r"d_scaled\.tif': has float pixel values in \[200, 200\]"
        ):
            load_texture_folder(tmp_path, load_images=load_images)
    with pytest.warns(UserWarning, match="d_scaled"):
        data = load_texture_folder(tmp_path, load_images=True, on_error="skip")
    assert len(data.images) == 3
    assert data.skipped[0][1].startswith("has float pixel values in [200, 200] (PIL mode 'F')")
    # 32-bit integers: refused from the header already
    _save(tmp_path / "e_int32.tif", np.full((6, 7), 200, dtype=np.int32))
    with pytest.raises(ValueError, match=r"e_int32\.tif': has 32-bit integer pixels"):
        load_texture_folder(tmp_path)


def test_loader_on_error_is_checked(tmp_path):
    _save(tmp_path / "a.png", _rgb(8, 8, 0))
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip', got 'ignore'"):
        load_texture_folder(tmp_path, on_error="ignore")


def test_loader_follows_symlinked_folders(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    _save(root / "z.png", _rgb(8, 8, 0))  # an image at the top: a plain, recursive folder
    for i in range(2):
        _save(root / "real" / f"r{i}.png", _rgb(8, 8, 1 + i))
        _save(outside / f"o{i}.png", _rgb(8, 8, 10 + i))
    _save(outside / "deeper" / "d.png", _rgb(8, 8, 20))
    (root / "linked").symlink_to(outside, target_is_directory=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = load_texture_folder(root)
    assert data.target is None and data.skipped == []
    names = [Path(f).relative_to(root).as_posix() for f in data.filenames]
    assert names == [
        "linked/deeper/d.png",
        "linked/o0.png",
        "linked/o1.png",
        "real/r0.png",
        "real/r1.png",
        "z.png",
    ]
    # class folders (and MVTec's test/<class>) may be links too
    labelled = tmp_path / "labelled"
    _save(labelled / "good" / "g.png", _rgb(8, 8, 0))
    (labelled / "defect").symlink_to(root / "real", target_is_directory=True)
    data = load_texture_folder(labelled)
    assert data.target_names == ["good", "defect"] and data.target.tolist() == [0, 1, 1]


def test_loader_symlink_loops_end_and_are_reported(tmp_path):
    _save(tmp_path / "z.png", _rgb(8, 8, 0))
    _save(tmp_path / "sub" / "a.png", _rgb(8, 8, 1))
    (tmp_path / "sub" / "loop").symlink_to(tmp_path, target_is_directory=True)  # an ancestor
    (tmp_path / "again").symlink_to(tmp_path / "sub", target_is_directory=True)  # a duplicate
    with pytest.warns(UserWarning, match="did not read 2 entries") as record:
        data = load_texture_folder(tmp_path)
    assert [Path(f).relative_to(tmp_path).as_posix() for f in data.filenames] == [
        "sub/a.png",
        "z.png",
    ]
    assert data.skipped == [
        (
            str(tmp_path / "again"),
            f"link to a folder already read ({str(tmp_path / 'sub')!r}); not followed again",
        ),
        (
            str(tmp_path / "sub" / "loop"),
            f"link to a folder already read ({str(tmp_path)!r}); not followed again",
        ),
    ]
    assert "again" in str(record[0].message) and "loop" in str(record[0].message)


def test_loader_reports_broken_links(tmp_path):
    _save(tmp_path / "a.png", _rgb(8, 8, 0))
    (tmp_path / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.warns(UserWarning, match="gone.png"):
        data = load_texture_folder(tmp_path)
    assert data.skipped == [(str(tmp_path / "gone.png"), "broken symbolic link")]


def _unreadable_folder(tmp_path):
    _save(tmp_path / "z.png", _rgb(8, 8, 0))
    _save(tmp_path / "locked" / "a.png", _rgb(8, 8, 1))
    return tmp_path / "locked"


def _check_reported(tmp_path, locked):
    with pytest.warns(UserWarning, match=r"'.*locked': folder cannot be read: Permission denied"):
        data = load_texture_folder(tmp_path)
    assert [Path(f).name for f in data.filenames] == ["z.png"]
    assert data.skipped == [(str(locked), "folder cannot be read: Permission denied")]


def test_loader_reports_unreadable_folders(tmp_path, monkeypatch):
    locked = _unreadable_folder(tmp_path)
    real = os.scandir

    def scandir(path="."):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    _check_reported(tmp_path, locked)


def test_loader_reads_synthetic_round_trip(tmp_path):
    data = _small(image_size=32)
    for i, (img, mask, y) in enumerate(zip(data.images, data.masks, data.target, strict=True)):
        name = data.target_names[y]
        _save(tmp_path / "test" / name / f"{i:03d}.png", img)
        if y > 0:
            _save(
                tmp_path / "ground_truth" / name / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255
            )
    loaded = load_texture_folder(tmp_path, load_images=True)
    assert sorted(loaded.target_names) == sorted(data.target_names)
    assert loaded.target_names[0] == "good"
    for f, y, img, mask in zip(
        loaded.filenames, loaded.target, loaded.images, loaded.masks, strict=True
    ):
        i = int(Path(f).stem)
        assert loaded.target_names[y] == data.target_names[data.target[i]]
        np.testing.assert_array_equal(img, data.images[i])
        np.testing.assert_array_equal(mask, data.masks[i])


@pytest.mark.mtd
@pytest.mark.skipif(not MTD.is_dir(), reason="../shared/data/mtd not available")
def test_loader_mtd_counts():
    data = load_texture_folder(MTD)
    expected = {"good": 952, "blowhole": 115, "break": 85, "crack": 57, "fray": 32, "uneven": 103}
    assert data.target_names == ["good", "blowhole", "break", "crack", "fray", "uneven"]
    counts = dict(zip(data.target_names, np.bincount(data.target).tolist(), strict=True))
    assert counts == expected
    assert len(data.filenames) == len(data.masks) == 1344
    assert data.skipped == []
    empty = [
        data.target_names[y]
        for m, y in zip(data.masks, data.target, strict=True)
        if y > 0 and not m.any()
    ]
    assert empty == ["uneven"] * 4  # as documented in the data set's README
    with Image.open(data.filenames[-1]) as img:
        assert data.masks[-1].shape == img.size[::-1]
