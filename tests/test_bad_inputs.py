"""A catalogue of bad and odd inputs, each with its exact outcome.

Files, arrays, folders, degenerate image sets, models, weights and arguments: every
case says what comes out (the result, or the error's words) and which files are left.
Nothing may be read differently from what it is, skipped without a word, or leave
partial outputs behind.
"""

import contextlib
import csv
import io
import json
import os
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
from PIL import Image

from skanomclust import TextureFeatureExtractor, WardClustering, make_blind_pipeline
from skanomclust._image_decoding import ImageReadError, decode_image, read_header
from skanomclust._images import check_images
from skanomclust.cli import main
from skanomclust.datasets import load_texture_folder
from skanomclust.run import cluster_images

# Tiny runs: random weights, 32 px, a small VAE trained for a few steps.
PARAMS = {
    "localizer__n_steps": 5,
    "localizer__pixels_per_step": 256,
    "localizer__hidden_channels": 8,
    "localizer__latent_channels": 4,
}
FAST = ["--weights", "none", "--image-size", "32"]
for _name, _value in PARAMS.items():
    FAST += ["--param", f"{_name}={_value}"]

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (12, 16, 3), dtype=np.uint8)  # 12 rows, 16 columns


# One torch and BLAS thread (tests/conftest.py): fast on a busy machine.
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def extractor():
    return TextureFeatureExtractor(weights=None, image_size=32, random_state=0).fit(RGB[None])


def _png(path, array=None, seed=0):
    """Write a small RGB PNG (random unless ``array``); return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if array is None:
        array = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(array).save(path)
    return path


def _good_folder(folder, n=3):
    for i in range(n):
        _png(Path(folder) / f"{i}.png", seed=i)
    return Path(folder)


def _cli(argv):
    """main(argv) with its output: (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main([str(a) for a in argv])
    return status, out.getvalue(), err.getvalue()


def _error_line(err):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("skanomclust"), err
    assert "error: " in lines[0] and "Traceback" not in err
    return lines[0]


def _names(folder):
    return sorted(p.name for p in Path(folder).iterdir())


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.reader(stream))


# ======================================================================= files that are bad
def _corrupt(path):
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 300, dtype=np.uint8).tobytes())


def _empty(path):
    path.write_bytes(b"")


def _text(path):
    path.write_text("this is not an image\n")


def _truncated_png(path):
    buffer = io.BytesIO()
    Image.fromarray(RGB).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue()[:-40])


def _truncated_jpeg(path):
    buffer = io.BytesIO()
    Image.fromarray(np.repeat(np.repeat(RGB, 4, 0), 4, 1)).save(buffer, "JPEG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


def _float_tiff_255(path):
    Image.fromarray(np.linspace(0, 255, 12 * 16, dtype=np.float32).reshape(12, 16)).save(path)


def _int32_tiff(path):
    Image.fromarray(np.full((12, 16), 200, np.int32)).save(path)


BAD_FILES = {
    # name: (writer, reason as the loader lists it)
    "corrupt.png": (_corrupt, "cannot be read: cannot identify image file"),
    "empty.png": (_empty, "cannot be read: the file is empty (0 bytes)"),
    "text.jpg": (_text, "cannot be read: cannot identify image file"),
    "truncated.png": (_truncated_png, "cannot be read: Truncated File Read"),
    "truncated.jpg": (_truncated_jpeg, "cannot be read: image file is truncated"),
    "float255.tif": (
        _float_tiff_255,
        "has float pixel values in [0, 255] (PIL mode 'F'); float images must lie in [0, 1]",
    ),
    "int32.tif": (_int32_tiff, "has 32-bit integer pixels (PIL mode 'I', e.g. an int32 TIFF)"),
}


@pytest.mark.parametrize("name", list(BAD_FILES))
def test_bad_file_stops_or_is_skipped_and_listed(name, tmp_path):
    folder = _good_folder(tmp_path / "images", 2)
    writer, reason = BAD_FILES[name]
    bad = folder / name
    writer(bad)
    # on_error="raise" (the API's default): one error naming the file and why
    with pytest.raises(ValueError) as info:
        load_texture_folder(folder)
    message = str(info.value)
    assert message.startswith("1 of 3 images cannot be read (on_error='skip' leaves them out):")
    assert f"  {str(bad)!r}: {reason}" in message
    # on_error="skip": left out, listed in skipped and in one warning
    with pytest.warns(UserWarning, match=r"did not read 1 entry \(listed") as record:
        data = load_texture_folder(folder, on_error="skip", load_images=True)
    assert len(record) == 1 and name in str(record[0].message)
    assert [Path(f).name for f in data.filenames] == ["0.png", "1.png"]
    assert len(data.images) == 2
    (skipped,) = data.skipped
    assert skipped[0] == str(bad) and skipped[1].startswith(reason)
    # the image decoder, given the file itself, names it too
    with pytest.raises(ImageReadError, match=f"^{str(bad)!r} "):
        decode_image(bad)


def test_cut_jpeg_is_found_from_its_missing_end_marker_without_decoding_good_ones(
    tmp_path, monkeypatch
):
    import skanomclust._image_decoding as decoding_module

    whole, cut = tmp_path / "whole.jpg", tmp_path / "cut.jpg"
    Image.fromarray(RGB).save(whole, quality=90)
    _truncated_jpeg(cut)
    decoded = []
    original = decoding_module.decode_image
    monkeypatch.setattr(
        decoding_module, "decode_image", lambda p, n=None: decoded.append(p) or original(p, n)
    )
    assert read_header(whole, verify=True) == (12, 16)
    with pytest.raises(ImageReadError, match="image file is truncated"):
        read_header(cut, verify=True)
    assert decoded == [cut]  # a complete JPEG is not decoded by the header check


# ================================================================ odd files, read as they are
def _decode_exactly(path, expected):
    got = decode_image(path)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_grayscale_png_is_one_uint8_channel(tmp_path):
    gray = RGB[..., 0]
    _png(tmp_path / "g.png", gray)
    _decode_exactly(tmp_path / "g.png", gray)


def test_rgba_png_drops_the_alpha_not_composited(tmp_path):
    alpha = np.where(np.arange(16) < 8, 0, 255).astype(np.uint8)[None, :].repeat(12, 0)
    _png(tmp_path / "a.png", np.dstack([RGB, alpha]))
    _decode_exactly(tmp_path / "a.png", RGB)  # colours under transparent pixels kept


def test_palette_png_is_expanded_to_rgb(tmp_path):
    image = Image.fromarray(RGB).quantize(8)
    image.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    _decode_exactly(tmp_path / "p.png", np.array(image.convert("RGB")))


def test_bilevel_png_is_0_and_255(tmp_path):
    Image.fromarray(RGB[..., 0] > 127).save(tmp_path / "b.png")
    _decode_exactly(tmp_path / "b.png", np.where(RGB[..., 0] > 127, 255, 0).astype(np.uint8))


def test_16_bit_png_is_scaled_by_65535(tmp_path):
    values = RGB[..., 0].astype(np.uint16) * 7  # at most 1785: dark, and it stays dark
    Image.fromarray(values).save(tmp_path / "u16.png")
    assert Image.open(tmp_path / "u16.png").mode.startswith("I;16")
    _decode_exactly(tmp_path / "u16.png", values.astype(np.float32) / np.float32(65535))


def test_float_tiff_in_0_1_is_kept(tmp_path):
    values = RGB[..., 1].astype(np.float32) / 255
    Image.fromarray(values).save(tmp_path / "f.tif")
    _decode_exactly(tmp_path / "f.tif", values)


def test_float_tiff_in_0_255_is_rejected_with_the_fix(tmp_path):
    _float_tiff_255(tmp_path / "f.tif")
    with pytest.raises(ImageReadError) as info:
        decode_image(tmp_path / "f.tif")
    assert str(info.value) == (
        f"{str(tmp_path / 'f.tif')!r} has float pixel values in [0, 255] (PIL mode 'F'); "
        "float images must lie in [0, 1]: divide 8-bit values by 255 and 16-bit ones by "
        "65535 (or pass uint8/uint16 data); clip resampling overshoots to [0, 1]."
    )


def test_int32_tiff_is_rejected_from_its_header(tmp_path):
    _int32_tiff(tmp_path / "i.tif")
    with pytest.raises(ImageReadError, match=r"has 32-bit integer pixels .* astype\(np.uint8\)"):
        read_header(tmp_path / "i.tif")  # without decoding


def test_exif_rotated_jpeg_is_turned_upright(tmp_path):
    image = Image.fromarray(RGB)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(tmp_path / "r.jpg", exif=exif, quality=95)
    with Image.open(tmp_path / "r.jpg") as stored:
        as_stored = np.array(stored)
    assert as_stored.shape == (12, 16, 3)
    _decode_exactly(tmp_path / "r.jpg", np.rot90(as_stored, k=-1))
    assert read_header(tmp_path / "r.jpg") == (16, 12)  # upright size from the header
    data = load_texture_folder(tmp_path, load_images=True)
    assert data.images[0].shape == (16, 12, 3)


def test_every_form_of_an_odd_file_gives_the_same_features(tmp_path, extractor):
    """Path, decoded array (as the loader returns it) and PIL image: one decoder."""
    Image.fromarray(RGB[..., 0]).save(tmp_path / "1_gray.png")
    Image.fromarray(RGB[..., 0].astype(np.uint16) * 257).save(tmp_path / "2_u16.png")
    Image.fromarray(RGB[..., 1].astype(np.float32) / 255).save(tmp_path / "3_float.tif")
    Image.fromarray(RGB).quantize(8).save(tmp_path / "4_palette.png")
    image = Image.fromarray(RGB)
    exif = image.getexif()
    exif[0x0112] = 8
    image.save(tmp_path / "5_rotated.jpg", exif=exif)
    data = load_texture_folder(tmp_path, load_images=True)
    assert [Path(f).name for f in data.filenames] == sorted(p.name for p in tmp_path.iterdir())
    from_paths = extractor.transform(data.filenames)
    np.testing.assert_array_equal(extractor.transform(data.images), from_paths)
    pil = [Image.open(f) for f in data.filenames]
    np.testing.assert_array_equal(extractor.transform(pil), from_paths)
    # a grey image is its grey colour image
    rgb_of_gray = np.repeat(RGB[..., :1], 3, axis=2)
    np.testing.assert_array_equal(extractor.transform([rgb_of_gray])[0], from_paths[0])
    # 16 bits holding v * 257 are the 8-bit values v
    np.testing.assert_allclose(
        extractor.transform([RGB[..., 0]])[0], from_paths[1], rtol=1e-5, atol=1e-5
    )


def test_mixed_image_sizes_are_each_resized(tmp_path, extractor):
    sizes = [(12, 16), (40, 24), (7, 9)]
    for i, (h, w) in enumerate(sizes):
        _png(tmp_path / f"{i}.png", np.resize(RGB, (h, w, 3)))
    data = load_texture_folder(tmp_path, load_images=True)
    assert [im.shape[:2] for im in data.images] == sizes
    assert extractor.image_sizes(data.filenames) == sizes
    features = extractor.transform(data.filenames)
    assert features.shape[0] == 3 and np.isfinite(features).all()


def test_hidden_files_are_ignored_and_extensions_any_case(tmp_path):
    _png(tmp_path / "A.PNG")
    _png(tmp_path / "B.JPG")
    _png(tmp_path / ".hidden.png")
    _png(tmp_path / ".cache" / "x.png")
    (tmp_path / "notes.txt").write_text("x")
    data = load_texture_folder(tmp_path)
    assert [Path(f).name for f in data.filenames] == ["A.PNG", "B.JPG"]
    assert data.skipped == []


# ======================================================================= arrays
@pytest.mark.parametrize(
    "array, expected",
    [
        (np.full((4, 4), 125, np.uint16), np.float32(125) / np.float32(65535)),  # not 8-bit
        (np.full((4, 4), 65535, np.uint16), np.float32(1.0)),
        (np.full((4, 4), 125, np.uint8), np.uint8(125)),
        (np.ones((4, 4), bool), np.uint8(255)),
        (np.full((4, 4), 0.25, np.float64), np.float32(0.25)),
        (np.full((4, 4, 1), 0.5, np.float16), np.float32(0.5)),
    ],
    ids=["uint16-max-125", "uint16-white", "uint8", "bool", "float64", "float16-1-channel"],
)
def test_array_scaled_by_its_type(array, expected):
    decoded = decode_image(array)
    assert decoded.dtype == np.asarray(expected).dtype and decoded.shape == (4, 4)
    assert decoded.max() == decoded.min() == expected


@pytest.mark.parametrize(
    "array, message",
    [
        (np.full((4, 4), 2.0), r"^image has float pixel values in \[2, 2\]; float images must"),
        (np.full((4, 4), -0.1), r"^image has float pixel values in \[-0.1, -0.1\]"),
        (np.full((4, 4, 3), 255.0, np.float32), r"in \[255, 255\].*divide 8-bit values by 255"),
        (np.full((4, 4), np.nan), r"^image contains NaN or infinite values$"),
        (np.full((4, 4), np.inf, np.float32), r"^image contains NaN or infinite values$"),
        (np.zeros((4, 4), np.int64), r"^image has int64 pixel values in \[0, 0\]: only uint8"),
        (np.zeros((4, 4), np.int32), r"^image has int32 pixel values"),
        (np.zeros((4, 4), complex), r"^image has complex dtype complex128"),
        (np.zeros((2, 4, 4, 3)), r"^image has 4 dimensions; expected \(H, W\) or \(H, W, C\)$"),
        (np.zeros((4, 4, 5)), r"^image has shape \(4, 4, 5\): expected \(H, W\), \(H, W, 1\)"),
        (np.zeros((0, 4)), r"^image is empty \(shape \(0, 4\)\)$"),
    ],
    ids=[
        "float-above-1",
        "float-negative",
        "float-0-255",
        "nan",
        "inf",
        "int64",
        "int32",
        "complex",
        "4-d-image",
        "5-channels",
        "empty",
    ],
)
def test_array_outside_the_contract_is_rejected(array, message):
    with pytest.raises(ImageReadError, match=message):
        decode_image(array)
    with pytest.raises(ImageReadError, match=message.replace("^image", "^image 0")):
        check_images([array])  # the first step's check, before any backbone work


@pytest.mark.parametrize(
    "X, error, message",
    [
        (np.zeros((2, 4, 4, 3, 1)), ValueError, r"got shape \(2, 4, 4, 3, 1\)"),
        (np.zeros((2, 4, 4, 5)), ValueError, r"with C in \(1, 2, 3, 4\), got shape"),
        (np.zeros((0, 4, 4, 3)), ValueError, r"^Found array with 0 images"),
        (np.full((3, 4, 4), 2.0), ImageReadError, r"^image 0 has float pixel values in \[2, 2\]"),
        ([], ValueError, r"^Found an empty list of images; need at least 1\.$"),
        ("images/0.png", TypeError, r"got a single path 'images/0.png'; pass a list of paths"),
        (["missing.png"], FileNotFoundError, r"^image 0 \('missing.png'\) does not exist$"),
        ([3.0], TypeError, r"^image 0 is a float; expected a file path, a PIL image or a numpy"),
    ],
    ids=[
        "5-d-stack",
        "5-channel-stack",
        "no-images",
        "stack-out-of-range",
        "empty-list",
        "single-path",
        "missing-file",
        "number",
    ],
)
def test_collection_rejected_with_a_clear_error(X, error, message):
    with pytest.raises(error, match=message):
        check_images(X)


# ======================================================================= folders
def test_empty_folder_and_folder_without_images(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"^No image files \(\.bmp, .*\.webp\) found in '"):
        load_texture_folder(tmp_path / "empty")
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("x")
    (texts / "b.csv").write_text("x")
    with pytest.raises(ValueError, match=r"^No image files .* found in '.*texts'\.$"):
        load_texture_folder(texts)


def test_every_image_unreadable_with_skip_is_an_error_listing_them(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.png").write_text("x")
    with pytest.raises(ValueError) as info:
        load_texture_folder(tmp_path, on_error="skip")
    assert str(info.value).splitlines() == [
        f"None of the image files in {str(tmp_path)!r} can be read.",
        "Not read:",
        f"  {str(tmp_path / 'a.png')!r}: cannot be read: the file is empty (0 bytes)",
        f"  {str(tmp_path / 'b.png')!r}: cannot be read: cannot identify image file "
        f"{str(tmp_path / 'b.png')!r}",
    ]


def test_symlinked_subfolder_is_followed(tmp_path):
    real = _good_folder(tmp_path / "elsewhere", 3)
    root = _good_folder(tmp_path / "root", 3)
    (root / "linked").symlink_to(real, target_is_directory=True)
    data = load_texture_folder(root)
    assert [Path(f).relative_to(root).as_posix() for f in data.filenames] == [
        "0.png",
        "1.png",
        "2.png",
        "linked/0.png",
        "linked/1.png",
        "linked/2.png",
    ]
    assert data.skipped == []


def test_symlink_loop_is_detected_and_reported(tmp_path):
    root = _good_folder(tmp_path / "root", 2)
    _png(root / "sub" / "x.png")
    (root / "sub" / "back").symlink_to(root, target_is_directory=True)
    with pytest.warns(UserWarning, match="link to a folder already read"):
        data = load_texture_folder(root)
    assert len(data.filenames) == 3
    assert data.skipped == [
        (
            str(root / "sub" / "back"),
            f"link to a folder already read ({str(root)!r}); not followed again",
        )
    ]


def test_broken_link_is_reported(tmp_path):
    root = _good_folder(tmp_path / "root", 2)
    (root / "gone.png").symlink_to(tmp_path / "nowhere.png")
    with pytest.warns(UserWarning, match="broken symbolic link"):
        data = load_texture_folder(root)
    assert len(data.filenames) == 2
    assert data.skipped == [(str(root / "gone.png"), "broken symbolic link")]


def test_unreadable_subfolder_is_reported_not_silently_skipped(tmp_path, monkeypatch):
    """Simulated (so that it runs as root too): listing the folder is refused."""
    root = _good_folder(tmp_path / "root", 2)
    locked = root / "locked"
    _png(locked / "z.png")
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.warns(UserWarning, match="did not read 1 entry"):
        data = load_texture_folder(root)
    assert len(data.filenames) == 2
    assert data.skipped == [(str(locked), "folder cannot be read: Permission denied")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders without permission")
def test_unreadable_subfolder_for_real(tmp_path):
    root = _good_folder(tmp_path / "root", 2)
    locked = root / "locked"
    _png(locked / "z.png")
    locked.chmod(0)
    try:
        with pytest.warns(UserWarning, match="did not read 1 entry"):
            data = load_texture_folder(root)
    finally:
        locked.chmod(0o755)
    assert data.skipped == [(str(locked), "folder cannot be read: Permission denied")]


@pytest.mark.parametrize(
    "make, error, message",
    [
        (lambda p: p / "missing", FileNotFoundError, r"^Texture folder '.*missing' does not"),
        (lambda p: _png(p / "one.png"), NotADirectoryError, r"^'.*one.png' is not a folder\.$"),
    ],
    ids=["missing", "a-file"],
)
def test_folder_that_is_not_one(tmp_path, make, error, message):
    with pytest.raises(error, match=message):
        load_texture_folder(make(tmp_path))


def test_on_error_must_be_raise_or_skip(tmp_path):
    with pytest.raises(ValueError, match=r"^on_error must be 'raise' or 'skip', got 'ignore'"):
        load_texture_folder(_good_folder(tmp_path), on_error="ignore")


# ======================================================================= degenerate sets
def test_identical_rows_auto_give_one_cluster_and_predict_equals_labels():
    X = np.ones((6, 4))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        model = WardClustering("auto").fit(X)
    assert [str(w.message) for w in record] == []
    assert model.n_clusters_ == 1
    np.testing.assert_array_equal(model.labels_, np.zeros(6))
    np.testing.assert_array_equal(model.predict(X), model.labels_)
    assert np.isfinite(model.cluster_centers_).all()


def test_near_identical_rows_auto_give_one_cluster():
    X = 1.0 + 1e-6 * np.random.default_rng(0).standard_normal((12, 4))
    assert WardClustering("auto", random_state=0).fit(X).n_clusters_ == 1


def test_fixed_k_on_identical_rows_warns_and_does_not_split():
    with pytest.warns(UserWarning) as record:
        model = WardClustering(3).fit(np.ones((6, 4)))
    assert [str(w.message) for w in record] == [
        "Only 1 of the 6 samples are distinct; identical samples are not split, so there "
        "is 1 cluster instead of 3."
    ]
    assert model.n_clusters_ == 1 and model.labels_.tolist() == [0] * 6


def test_predict_on_the_training_rows_equals_labels_with_duplicates():
    rng = np.random.default_rng(0)
    X = np.repeat(rng.standard_normal((5, 3)), [3, 1, 4, 2, 2], axis=0)
    X = np.vstack([X, rng.standard_normal((8, 3))])
    for k in ("auto", 2, 4, 7):
        model = WardClustering(k, random_state=0).fit(X)
        np.testing.assert_array_equal(model.predict(X), model.labels_)


def test_six_identical_images_auto_give_one_cluster_without_warnings():
    image = RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        result = cluster_images(
            np.stack([image] * 6), "auto", weights=None, image_size=32, params=PARAMS
        )
    ours = [w for w in record if issubclass(w.category, (UserWarning, RuntimeWarning))]
    assert [str(w.message) for w in ours] == []
    assert result.n_clusters == 1
    assert result.labels.tolist() == [0] * 6
    assert np.isfinite(result.image_scores).all()


def test_too_few_images_for_the_api():
    with pytest.raises(ValueError, match=r"^Found 1 image; clustering needs at least 2\.$"):
        cluster_images(RGB[None], weights=None, image_size=32)
    with pytest.raises(ValueError, match=r"^n_clusters=3 is larger than the number of images"):
        cluster_images(np.stack([RGB, RGB]), 3, weights=None, image_size=32)


# ======================================================================= the command line
@pytest.fixture(scope="module")
def ten_cluster_model(tmp_path_factory):
    """A model fitted with -k 10 on 12 different noise images."""
    root = tmp_path_factory.mktemp("ten")
    images = _good_folder(root / "images", 12)
    status, _, err = _cli(["cluster", images, "-o", root / "run", "-k", "10", "-q", *FAST])
    assert status == 0, err
    return root / "run" / "model.joblib"


def test_predict_on_a_10_cluster_model_lists_every_cluster(ten_cluster_model, tmp_path):
    images = _good_folder(tmp_path / "new", 3)
    status, out, err = _cli(["predict", ten_cluster_model, images, "-o", tmp_path / "out", "-q"])
    assert status == 0 and err == ""
    first = out.splitlines()[0]
    assert first.startswith("3 images in 10 clusters (sizes ")
    sizes = [int(s) for s in first.split("(sizes ")[1].rstrip(")").split(", ")]
    assert len(sizes) == 10 and sum(sizes) == 3
    rows = _read_csv(tmp_path / "out" / "assignments.csv")[1:]
    assert sizes == [sum(int(r[1]) == c for r in rows) for c in range(10)]


def test_cli_skips_unreadable_images_and_lists_them(tmp_path):
    images = _good_folder(tmp_path / "images", 3)
    _corrupt(images / "corrupt.png")
    _float_tiff_255(images / "float255.tif")
    (images / "gone.png").symlink_to(tmp_path / "nowhere.png")
    status, out, err = _cli(["cluster", images, "-o", tmp_path / "out", "-q", *FAST])
    assert status == 0
    assert err == ""  # -q: not even the loader's warning
    assert out.startswith("3 images in ")
    expected = [
        # as found: links while listing, then files by their headers; paths relative to
        # the input folder, as in assignments.csv
        ["path", "reason"],
        ["gone.png", "broken symbolic link"],
        ["corrupt.png", "cannot be read: cannot identify image file"],
        ["float255.tif", "has float pixel values in [0, 255] (PIL mode 'F')"],
    ]
    rows = _read_csv(tmp_path / "out" / "skipped.csv")
    assert [row[0] for row in rows] == [row[0] for row in expected]
    assert all(row[1].startswith(e[1]) for row, e in zip(rows, expected, strict=True))
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert [list(s) for s in run["skipped"]] == rows[1:]
    assert [r[0] for r in _read_csv(tmp_path / "out" / "assignments.csv")[1:]] == [
        "0.png",
        "1.png",
        "2.png",
    ]
    assert _names(tmp_path) == ["images", "out"]
    assert not list(tmp_path.glob(".out*"))


def test_cli_without_quiet_says_what_was_skipped_in_one_line_each(tmp_path):
    images = _good_folder(tmp_path / "images", 2)
    _empty(images / "empty.png")
    status, _, err = _cli(["cluster", images, "-o", tmp_path / "out", *FAST])
    assert status == 0
    skipped = [line for line in err.splitlines() if "empty.png" in line]
    assert skipped == [
        f"skanomclust: warning: load_texture_folder({str(images)!r}) did not read 1 entry "
        f"(listed in the result's skipped): {str(images / 'empty.png')!r}: cannot be read: "
        "the file is empty (0 bytes)",
        "skipped empty.png: cannot be read: the file is empty (0 bytes)",
    ]
    assert [line for line in err.splitlines() if "warning:" in line] == skipped[:1]


def test_cli_stop_names_the_file_before_the_backbone_is_built(tmp_path, monkeypatch):
    def no_backbone(self, *args, **kwargs):
        raise AssertionError("the backbone was built before the inputs were checked")

    monkeypatch.setattr(TextureFeatureExtractor, "fit", no_backbone)
    images = _good_folder(tmp_path / "images", 3)
    _truncated_png(images / "cut.png")
    status, out, err = _cli(
        ["cluster", images, "-o", tmp_path / "out", "--on-error", "stop", "-q", *FAST]
    )
    assert status == 2 and out == ""
    assert _error_line(err) == (
        "skanomclust: error: 1 of 4 images cannot be read (on_error='skip' leaves them out): "
        f"{str(images / 'cut.png')!r}: cannot be read: Truncated File Read"
    )
    assert _names(tmp_path) == ["images"]


def test_cli_six_identical_images_fixed_k_warns_once_and_gives_one_cluster(tmp_path):
    image = RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    folder = tmp_path / "same"
    for i in range(6):
        _png(folder / f"{i}.png", image)
    status, out, err = _cli(["cluster", folder, "-o", tmp_path / "out", "-k", "3", *FAST])
    assert status == 0
    assert out.splitlines()[0] == "6 images in 1 cluster (sizes 6)"
    assert [line for line in err.splitlines() if "warning" in line] == [
        "skanomclust: warning: Only 1 of the 6 samples are distinct; identical samples are "
        "not split, so there is 1 cluster instead of 3."
    ]
    settings = json.loads((tmp_path / "out" / "run.json").read_text())["settings"]
    assert settings["n_clusters"] == 3 and settings["n_clusters_found"] == 1


@pytest.fixture
def inputs(tmp_path):
    """Small inputs for the error cases; every case must leave exactly these behind."""
    _good_folder(tmp_path / "few", 3)
    _png(tmp_path / "one" / "only.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("no images")
    (tmp_path / "wdir").mkdir()
    (tmp_path / "emptyfile").write_bytes(b"")
    _corrupt(tmp_path / "random.bin")
    (tmp_path / "model.json").write_text('{"steps": []}')
    joblib.dump({"steps": 1}, tmp_path / "dict.joblib")
    from sklearn.preprocessing import StandardScaler

    joblib.dump(StandardScaler(), tmp_path / "scaler.joblib")
    joblib.dump(make_blind_pipeline(2, weights=None), tmp_path / "unfitted.joblib")
    (tmp_path / "a_file").write_text("not a folder")
    return tmp_path


NOT_A_MODEL = "is not a model written by 'skanomclust cluster'"
CLI_ERRORS = {
    # id: (arguments, exit status, fragment of the one error line)
    "too-few-images": (["cluster", "one"], 2, "found 1 image; clustering needs at least 2"),
    "empty-folder": (["cluster", "empty"], 2, "No image files (.bmp, .jpeg, .jpg, .png"),
    "only-non-images": (["cluster", "texts"], 2, "No image files (.bmp"),
    "input-missing": (["cluster", "nowhere"], 2, "input folder 'nowhere' does not exist"),
    "input-is-a-file": (["cluster", "a_file"], 2, "input 'a_file' is not a folder"),
    "k-zero": (["cluster", "few", "-k", "0"], 2, "expected a positive integer or 'auto', got '0'"),
    "k-negative": (["cluster", "few", "-k", "-3"], 2, "a positive integer or 'auto', got '-3'"),
    "k-word": (["cluster", "few", "-k", "two"], 2, "a positive integer or 'auto', got 'two'"),
    "k-above-n": (["cluster", "few", "-k", "4"], 2, "--n-clusters 4 is larger than the number"),
    "unknown-param": (
        ["cluster", "few", "--param", "localizer__nope=1"],
        2,
        "--param: unknown parameter 'localizer__nope'; names are STEP__PARAMETER",
    ),
    "malformed-param": (
        ["cluster", "few", "--param", "n_steps"],
        2,
        "expected STEP__PARAMETER=VALUE (e.g. localizer__n_steps=200), got 'n_steps'",
    ),
    "bad-param-value": (  # checked before any work, like a bad name: a usage error
        ["cluster", "few", "--param", "localizer__n_steps=-5"],
        2,
        "The 'n_steps' parameter of BlindAnomalyLocalizer must be an int in the range [0, inf)",
    ),
    "bad-device": (["cluster", "few", "--device", "nodev"], 2, "--device: Invalid device 'nodev'"),
    "image-size-zero": (["cluster", "few", "--image-size", "0"], 2, "positive integer, got '0'"),
    "sample-size-one": (
        ["cluster", "few", "--sample-size", "1"],
        1,
        "sample_size must leave at least 2 images to fit on, got 1",
    ),
    "unknown-backbone": (["cluster", "few", "--backbone", "vgg16"], 2, "unknown backbone 'vgg16'"),
    "weights-folder": (
        ["cluster", "few", "--weights", "TMP/wdir"],
        1,
        "Weights path 'TMP/wdir' is a folder; pass the state-dict file",
    ),
    "weights-missing": (
        ["cluster", "few", "--weights", "TMP/missing.pt"],
        1,
        "Weights file not found: 'TMP/missing.pt'",
    ),
    "weights-garbage": (
        ["cluster", "few", "--weights", "TMP/random.bin"],
        1,
        "Could not read weights file 'TMP/random.bin' as a torch state dict",
    ),
    "output-is-a-file": (
        ["cluster", "few", "-o", "TMP/a_file"],
        2,
        "--output TMP/a_file exists and is not a folder",
    ),
    "output-below-a-file": (
        ["cluster", "few", "-o", "TMP/a_file/out"],
        2,
        "cannot create the folder TMP/a_file for --output: TMP/a_file is a file, not a folder",
    ),
    "output-in-input": (["cluster", "few", "-o", "TMP/few/out"], 2, "is inside the input folder"),
    "model-folder": (["predict", "wdir", "few"], 2, "model 'wdir' is a folder, not a model file"),
    "model-missing": (["predict", "nope.joblib", "few"], 2, "model file 'nope.joblib' does not"),
    "model-empty": (["predict", "emptyfile", "few"], 2, (NOT_A_MODEL, "(the file is empty)")),
    "model-random-bytes": (
        ["predict", "random.bin", "few"],
        2,
        (NOT_A_MODEL, "(it cannot be read as one: "),
    ),
    "model-json": (["predict", "model.json", "few"], 2, (NOT_A_MODEL, "(it cannot be read as")),
    "model-dict": (["predict", "dict.joblib", "few"], 2, (NOT_A_MODEL, "(it holds a dict)")),
    "model-other-estimator": (
        ["predict", "scaler.joblib", "few"],
        2,
        (NOT_A_MODEL, "(it holds a StandardScaler)"),
    ),
    "model-unfitted": (
        ["predict", "unfitted.joblib", "few"],
        2,
        (NOT_A_MODEL, "(its pipeline is not fitted)"),
    ),
    "unknown-command": (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
}


@pytest.mark.parametrize("case", list(CLI_ERRORS))
def test_cli_error_is_one_clear_line_and_leaves_nothing(case, inputs, monkeypatch):
    args, expected_status, fragment = CLI_ERRORS[case]
    monkeypatch.chdir(inputs)
    before = _names(inputs)
    argv = [a.replace("TMP", str(inputs)) for a in args]
    if args[0] in ("cluster", "predict") and "-o" not in args:
        argv += ["-o", str(inputs / "out")]
    if args[0] in ("cluster", "predict"):
        argv += ["-q"]
    if args[0] == "cluster":  # random weights, small images: an error found late is quick
        argv += ["--image-size", "32", *([] if "--weights" in args else ["--weights", "none"])]
    status, out, err = _cli(argv)
    line = _error_line(err)
    assert status == expected_status, line
    for part in (fragment,) if isinstance(fragment, str) else fragment:
        assert part.replace("TMP", str(inputs)) in line
    assert out == ""
    assert _names(inputs) == before  # no output, no temporary or work folder
