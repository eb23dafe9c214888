"""The data contract for image inputs: skanomclust._image_decoding and _images.check_images."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image

from skanomclust._image_decoding import ImageReadError, decode_image, read_header
from skanomclust._images import check_images
from skanomclust.datasets import load_texture_folder

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (12, 20, 3), dtype=np.uint8)
GRAY16 = RNG.integers(0, 65536, (12, 20), dtype=np.uint16)


def _save(path, image, **kwargs):
    image = image if isinstance(image, Image.Image) else Image.fromarray(image)
    image.save(path, **kwargs)
    return str(path)


def _tensor(item, size=16):
    (batch,) = check_images([item]).iter_batches(1, size)
    return batch


# --------------------------------------------------------------------------- values
def test_uint8_is_kept_and_read_over_255():
    out = decode_image(RGB)
    assert out.dtype == np.uint8 and np.array_equal(out, RGB)
    square = RGB[:, :12]  # at image_size: no resampling
    expected = torch.from_numpy(square.astype(np.float32) / 255).permute(2, 0, 1)
    torch.testing.assert_close(_tensor(square, 12)[0], expected)


def test_uint16_array_is_scaled_by_65535_even_with_a_small_maximum():
    dark = np.arange(126, dtype=np.uint16).reshape(6, 21)  # maximum 125: not read as 8-bit
    out = decode_image(dark)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, dark.astype(np.float32) / np.float32(65535))
    assert out.max() == pytest.approx(125 / 65535)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_files_are_scaled_by_65535(tmp_path, fmt):
    path = _save(tmp_path / f"gray16.{fmt.lower()}", GRAY16, format=fmt)
    with Image.open(path) as image:
        assert image.mode.startswith("I;16")
    np.testing.assert_array_equal(decode_image(path), GRAY16.astype(np.float32) / 65535)
    big_endian = Image.frombytes("I;16B", GRAY16.shape[::-1], GRAY16.astype(">u2").tobytes())
    np.testing.assert_array_equal(decode_image(big_endian), decode_image(path))


def test_float_tiff_in_unit_range_matches_the_8_bit_file(tmp_path):
    gray = RGB[..., 0]
    eight = _save(tmp_path / "eight.png", gray)
    floats = _save(tmp_path / "float.tif", Image.fromarray(gray.astype(np.float32) / 255, "F"))
    with Image.open(floats) as image:
        assert image.mode == "F"
    out = decode_image(floats)
    assert out.dtype == np.float32
    assert np.abs(out - decode_image(eight) / 255.0).max() <= 1 / 255
    assert (_tensor(floats) - _tensor(eight)).abs().max() <= 1 / 255


def test_float_tiff_in_0_255_is_rejected_with_file_and_range(tmp_path):
    image = Image.fromarray(RGB[..., 0].astype(np.float32), "F")
    path = _save(tmp_path / "scaled.tif", image)
    low, high = int(RGB[..., 0].min()), int(RGB[..., 0].max())
    message = (
        rf"'.*scaled\.tif' has float pixel values in \[{low}, {high}\] \(PIL mode 'F'\); "
        r"float images must lie in \[0, 1\]: divide 8-bit values by 255"
    )
    with pytest.raises(ImageReadError, match=message):
        decode_image(path)
    collection = check_images([path])  # the header is fine: found when decoding
    with pytest.raises(ValueError, match=r"image 0 \('.*scaled\.tif'\) has float pixel values"):
        next(collection.iter_batches(1, 16))


@pytest.mark.parametrize(
    "array, found",
    [
        (np.full((4, 4, 3), 2.5), r"\[2.5, 2.5\]"),
        (np.full((4, 4), -0.25, dtype=np.float32), r"\[-0.25, -0.25\]"),
        (RGB.astype(np.float64), rf"\[{RGB.min()}, {RGB.max()}\]"),
    ],
)
def test_floats_outside_the_unit_range_are_rejected(array, found):
    with pytest.raises(ImageReadError, match=r"image has float pixel values in " + found):
        decode_image(array)
    stacked = np.stack([np.zeros_like(array), array])
    with pytest.raises(ValueError, match=r"image 1 has float pixel values in " + found):
        check_images(stacked)  # before any backbone work
    with pytest.raises(ValueError, match=r"image 1 has float pixel values"):
        check_images([np.zeros_like(array), array])


def test_nan_and_inf_are_rejected():
    for bad in (np.nan, np.inf):
        array = np.zeros((4, 4), dtype=np.float32)
        array[1, 2] = bad
        with pytest.raises(ImageReadError, match="image contains NaN or infinite values"):
            decode_image(array)


def test_bool_is_black_and_white():
    mask = np.eye(5, dtype=bool)
    out = decode_image(mask)
    assert out.dtype == np.uint8 and set(np.unique(out)) == {0, 255}
    torch.testing.assert_close(_tensor(mask, 5)[0, 0], torch.from_numpy(mask.astype(np.float32)))
    one_bit = Image.fromarray(mask).convert("1")
    np.testing.assert_array_equal(decode_image(one_bit), out)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.int16, np.uint32])
def test_integers_without_a_white_level_are_rejected(dtype):
    array = np.arange(20, dtype=dtype).reshape(4, 5)
    with pytest.raises(
        ImageReadError,
        match=rf"has {np.dtype(dtype)} pixel values in \[0, 19\].*astype\(np.uint8\)",
    ):
        decode_image(array)
    with pytest.raises(ValueError, match=r"image 0 has .* pixel values"):
        check_images(array[None])


def test_int32_tiff_is_rejected_from_its_header(tmp_path):
    path = _save(tmp_path / "int32.tif", RGB[..., 0].astype(np.int32))
    with Image.open(path) as image:
        assert image.mode == "I"
    pattern = r"image 0 \('.*int32\.tif'\) has 32-bit integer pixels \(PIL mode 'I'"
    with pytest.raises(ImageReadError, match=pattern):
        check_images([path])
    with pytest.raises(ImageReadError, match="PIL mode 'I'"):
        decode_image(Image.open(path))


def test_tables_are_used_unscaled():
    table = np.arange(-3, 9, dtype=np.int64).reshape(2, 6)  # scikit-learn's tabular input
    images = check_images(table)
    assert images.sizes() == [(1, 6), (1, 6)]
    batch = next(images.iter_batches(2, 6))
    np.testing.assert_array_equal(batch[:, 0, 0].numpy(), table.astype(np.float32))
    with pytest.raises(ValueError, match="image 1 contains NaN"):
        check_images(np.array([[0.0, 1.0], [np.nan, 2.0]]))


# --------------------------------------------------------------------------- channels
def test_alpha_is_dropped_not_composited(tmp_path):
    rgba = np.dstack([RGB, np.zeros(RGB.shape[:2], np.uint8)])  # fully transparent
    path = _save(tmp_path / "rgba.png", rgba)
    for item in (rgba, path, Image.open(path)):
        np.testing.assert_array_equal(decode_image(item), RGB)
    la = Image.fromarray(np.dstack([RGB[..., 0], RGB[..., 1]]), "LA")
    np.testing.assert_array_equal(decode_image(la), RGB[..., 0])


def test_palette_with_transparency_is_rgb_without_warning():
    palette = Image.fromarray(RGB).quantize(16)
    palette.info["transparency"] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = decode_image(palette)
    np.testing.assert_array_equal(out, np.asarray(palette.convert("RGB")))


def test_bad_shapes_and_types_are_named():
    with pytest.raises(ImageReadError, match=r"image has shape \(4, 4, 5\)"):
        decode_image(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(ImageReadError, match="image has non-numeric dtype"):
        decode_image(np.array([["a"]]))
    with pytest.raises(TypeError, match="image is a int"):
        decode_image(3)


# --------------------------------------------------------------------------- files
def _exif_jpeg(path, array, orientation):
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    return _save(path, array, quality=95, exif=exif)


@pytest.mark.parametrize(
    "orientation, turn",
    [(6, lambda a: np.rot90(a, -1)), (3, lambda a: a[::-1, ::-1]), (8, np.rot90)],
)
def test_exif_orientation_is_applied(tmp_path, orientation, turn):
    plain = decode_image(_save(tmp_path / "plain.jpg", RGB, quality=95))
    path = _exif_jpeg(tmp_path / "turned.jpg", RGB, orientation)
    np.testing.assert_array_equal(decode_image(path), turn(plain))
    with Image.open(path) as image:
        np.testing.assert_array_equal(decode_image(image), turn(plain))
        assert image.getexif()[ExifTags.Base.Orientation] == orientation  # not modified
    assert check_images([path]).sizes() == [turn(plain).shape[:2]]
    assert read_header(path) == turn(plain).shape[:2]


def test_unreadable_files_are_named(tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG but not really")
    with pytest.raises(ImageReadError, match=r"image 1 \('.*broken\.png'\) cannot be read"):
        check_images([_save(tmp_path / "ok.png", RGB), str(broken)])  # at the header
    with pytest.raises(ImageReadError, match=r"'.*broken\.png' cannot be read"):
        decode_image(broken)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        decode_image(tmp_path / "missing.png")


def test_truncated_png_fails_verify(tmp_path):
    path = tmp_path / "cut.png"
    _save(path, RGB)
    path.write_bytes(path.read_bytes()[:-40])
    assert read_header(path) == RGB.shape[:2]  # the header alone is fine
    with pytest.raises(ImageReadError, match="cut.png' cannot be read"):
        read_header(path, verify=True)


# ------------------------------------------------------- same tensors from every form
def test_path_pil_and_loaded_array_give_identical_tensors(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    _save(folder / "a_rgb.png", RGB)
    _save(folder / "b_gray.png", RGB[..., 1])
    _save(folder / "c_gray16.png", GRAY16)
    _save(folder / "d_float.tif", Image.fromarray(RGB[..., 2].astype(np.float32) / 255, "F"))
    _exif_jpeg(folder / "e_turned.jpg", RGB, 6)
    _save(folder / "f_palette.png", Image.fromarray(RGB).quantize(8))
    _save(folder / "g_rgba.png", np.dstack([RGB, RGB[..., 0]]))
    data = load_texture_folder(folder, load_images=True)
    assert len(data.filenames) == 7 and data.skipped == []
    assert [im.dtype for im in data.images] == [np.uint8, np.uint8, np.float32, np.float32] + [
        np.uint8
    ] * 3
    assert data.images[4].shape == (20, 12, 3)  # upright
    forms = {
        "paths": data.filenames,
        "pil": [Image.open(f) for f in data.filenames],
        "loaded": data.images,
    }
    batches = {k: torch.cat(list(check_images(v).iter_batches(3, 16))) for k, v in forms.items()}
    assert torch.equal(batches["paths"], batches["pil"])
    assert torch.equal(batches["paths"], batches["loaded"])
    stacked = np.stack([im for im in data.images if im.shape == RGB.shape])  # a 4-D array too
    assert torch.equal(
        next(check_images(stacked).iter_batches(9, 16)), batches["paths"][[0, 5, 6]]
    )


# --------------------------------------------------------------------------- batches
def _mixed_folder(tmp_path, n=11):
    rng = np.random.default_rng(1)
    paths = []
    for i in range(n):
        shape = (20 + 3 * i, 31 - i) + (() if i % 3 == 0 else (3,))
        paths.append(_save(tmp_path / f"{i}.png", rng.integers(0, 256, shape, dtype=np.uint8)))
    return paths


def test_decoding_ahead_on_threads_gives_the_same_batches(tmp_path):
    images = check_images(_mixed_folder(tmp_path))
    one_by_one = list(images.iter_batches(4, 16, threads=0))
    ahead = list(images.iter_batches(4, 16, threads=3))
    assert [len(b) for b in ahead] == [4, 4, 3]
    for a, b in zip(one_by_one, ahead, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_decoding_ahead_reports_the_unreadable_image_and_stops_its_threads(tmp_path):
    import threading

    paths = _mixed_folder(tmp_path)
    broken = Path(paths[6])
    broken.write_bytes(broken.read_bytes()[:60])  # the header still reads
    images = check_images(paths)
    before = threading.active_count()
    with pytest.raises(ImageReadError, match="6.png"):
        for _ in images.iter_batches(2, 16, threads=3):
            pass
    assert threading.active_count() == before
