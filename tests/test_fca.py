"""Tests of skanomclust.nn.fca against deliberately simple loop implementations."""

import sys

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF

from skanomclust.nn import (
    fca,
    fca_cpu,
    fca_reference,
    feature_correspondence_analysis,
    gaussian_blur,
    postprocess_anomaly_maps,
    principal_channels,
    project_channels,
)

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# numba is a dependency: the compiled CPU kernel is tested, never skipped.
IMPLEMENTATIONS = ["torch", "numba"]


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(0)


# --------------------------------------------------------------------------- loop references


def numpy_reflect_pad(x, top, bottom, left, right):
    """Reflect padding of the last two dims with numpy (repeats reflections if needed)."""
    pad = [(0, 0)] * (x.ndim - 2) + [(top, bottom), (left, right)]
    return torch.from_numpy(np.pad(x.numpy(), pad, mode="reflect"))


def gaussian_window(size, sigma):
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    g = g / g.sum()
    return torch.outer(g, g)


def loop_reference(image, patch_size):
    """Median over tiles of the sorted tile values, with explicit loops (one image)."""
    channels, h, w = image.shape
    pad_h, pad_w = max(patch_size - h, 0), max(patch_size - w, 0)
    image = numpy_reflect_pad(
        image, pad_h // 2, pad_h - pad_h // 2, pad_w // 2, pad_w - pad_w // 2
    )
    h, w = image.shape[1:]
    tiles = []
    for y in range(0, h - patch_size + 1, patch_size):
        for x in range(0, w - patch_size + 1, patch_size):
            tile = image[:, y : y + patch_size, x : x + patch_size].reshape(channels, -1)
            tiles.append(torch.sort(tile, dim=1).values)
    return torch.stack(tiles).median(dim=0).values


def loop_fca(features, patch_size=7, sigma_p=3.0, blur_kernel=5, blur_sigma=1.0, reference=None):
    """METHOD.md step 3 written with a Python loop over pixels, in float64."""
    features = features.double()
    n, channels, h, w = features.shape
    r = patch_size // 2
    window = gaussian_window(patch_size, sigma_p)
    maps = torch.zeros(n, h, w, dtype=torch.float64)
    for i in range(n):
        if reference is None:
            ref = loop_reference(features[i], patch_size)
        else:
            ref = reference.double() if reference.ndim == 2 else reference[i].double()
        padded = numpy_reflect_pad(features[i], r, r, r, r)
        accumulated = torch.zeros(h + 2 * r, w + 2 * r, dtype=torch.float64)
        for y in range(h):
            for x in range(w):
                patch = padded[:, y : y + patch_size, x : x + patch_size].reshape(channels, -1)
                values, order = torch.sort(patch, dim=1, stable=True)
                sorted_diff = (values - ref).abs()
                diff = torch.empty_like(sorted_diff)
                for c in range(channels):
                    diff[c, order[c]] = sorted_diff[c]
                diff_patch = diff.mean(dim=0).reshape(1, 1, patch_size, patch_size)
                diff_patch = TF.gaussian_blur(diff_patch, [blur_kernel] * 2, [blur_sigma] * 2)
                accumulated[y : y + patch_size, x : x + patch_size] += diff_patch[0, 0] * window
        maps[i] = accumulated[r : r + h, r : r + w]
    return maps


# --------------------------------------------------------------------------- gaussian_blur


@pytest.mark.parametrize("shape", [(1, 3, 16, 16), (2, 5, 7), (9, 11), (2, 1, 3, 4, 6)])
@pytest.mark.parametrize(
    "kernel_size, sigma", [(5, 1.0), (7, 2.0), (3, 0.5), ((3, 7), (0.8, 2.0)), ([5, 3], 1.5)]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gaussian_blur_matches_torchvision(generator, shape, kernel_size, sigma, dtype):
    x = torch.rand(shape, generator=generator, dtype=dtype)
    # torchvision wants (..., C, h, w) images; blur every map as its own image.
    expected = TF.gaussian_blur(x.reshape(-1, 1, *shape[-2:]), kernel_size, sigma).reshape(shape)
    result = gaussian_blur(x, kernel_size, sigma)
    assert result.shape == x.shape and result.dtype == dtype
    torch.testing.assert_close(result, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("h, w", [(1, 1), (2, 2), (1, 7), (3, 5), (2, 9)])
def test_gaussian_blur_maps_smaller_than_kernel(generator, h, w):
    """Torchvision cannot reflect-pad these; we repeat the reflection as numpy.pad does."""
    x = torch.rand(2, h, w, generator=generator, dtype=torch.float64)
    result = gaussian_blur(x, 7, 2.0)
    padded = numpy_reflect_pad(x, 3, 3, 3, 3)
    kernel = gaussian_window(7, 2.0)
    expected = torch.zeros_like(x)
    for y in range(h):
        for xx in range(w):
            expected[:, y, xx] = (padded[:, y : y + 7, xx : xx + 7] * kernel).sum(dim=(-2, -1))
    torch.testing.assert_close(result, expected, atol=1e-12, rtol=0)
    # The kernel is normalised: a constant map stays constant.
    torch.testing.assert_close(
        gaussian_blur(torch.full((h, w), 3.0), 7, 2.0), torch.full((h, w), 3.0)
    )


def test_gaussian_blur_rejects_bad_arguments():
    with pytest.raises(ValueError, match="odd"):
        gaussian_blur(torch.zeros(4, 4), 4, 1.0)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_blur(torch.zeros(4, 4), 3, 0.0)
    with pytest.raises(TypeError):
        gaussian_blur(torch.zeros(4, 4, dtype=torch.int64), 3, 1.0)


# --------------------------------------------------------------------------- fca_reference


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_fca_reference_lower_median_by_hand(implementation):
    # Two 3x3 tiles side by side and a remainder column that must be left out.
    tile_a = torch.full((3, 3), 5.0)
    tile_b = torch.tensor([[9.0, 0.0, 8.0], [1.0, 7.0, 2.0], [6.0, 3.0, 4.0]])
    remainder = torch.full((3, 1), -100.0)
    x = torch.cat([tile_a, tile_b, remainder], dim=1)[None, None]
    reference = fca_reference(x, patch_size=3, implementation=implementation)
    # Even number of tiles: torch.median's lower median, i.e. the per-rank minimum here.
    expected = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0])
    torch.testing.assert_close(reference, expected[None, None])


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_fca_reference_three_tiles_and_remainder_rows(implementation):
    values = torch.tensor([[3.0, 1.0, 2.0], [30.0, 10.0, 20.0], [-1.0, -2.0, -3.0]])
    # 1x3 tiles need patch_size 1 per pixel; use patch_size=1: every pixel is a tile.
    x = values[None, None]
    reference = fca_reference(x, patch_size=1, implementation=implementation)
    torch.testing.assert_close(reference, torch.tensor([[[2.0]]]))
    # patch_size 3 on a 4x3 map: the single full tile is the first three rows.
    x = torch.cat([values, torch.full((1, 3), 1e6)])[None, None]
    expected = torch.sort(values.reshape(-1)).values
    reference = fca_reference(x, patch_size=3, implementation=implementation)
    torch.testing.assert_close(reference[0, 0], expected)


@pytest.mark.parametrize("shape", [(2, 3, 9, 9), (1, 4, 15, 22), (2, 2, 8, 13), (3, 2, 1, 1)])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_fca_reference_matches_loop(generator, implementation, shape):
    x = torch.rand(shape, generator=generator)
    reference = fca_reference(x, patch_size=7, implementation=implementation)
    assert reference.shape == (shape[0], shape[1], 49)
    for i in range(shape[0]):
        torch.testing.assert_close(reference[i], loop_reference(x[i], 7))
    assert torch.all(reference[..., 1:] >= reference[..., :-1])


@pytest.mark.parametrize("length", range(1, 13))
def test_sorting_network_sorts_every_zero_one_sequence(length):
    # The 0-1 principle: a comparator network that sorts every 0-1 sequence sorts anything.
    pairs = fca_cpu.sorting_network(length)
    assert (pairs[:, 0] < pairs[:, 1]).all() and (pairs[:, 1] < length).all()
    bits = (np.arange(2**length)[:, None] >> np.arange(length)) & 1
    for low, high in pairs:
        bits[:, [low, high]] = np.sort(bits[:, [low, high]], axis=1)
    assert (np.diff(bits, axis=1) >= 0).all()


@pytest.mark.parametrize("length", [13, 16, 25, 49, 81, 121])
def test_sorting_network_sorts_longer_columns(length):
    rng = np.random.default_rng(length)
    values = rng.integers(0, 5, size=(200, length)).astype(float)  # many ties
    expected = np.sort(values, axis=1)
    for low, high in fca_cpu.sorting_network(length):
        values[:, [low, high]] = np.sort(values[:, [low, high]], axis=1)
    np.testing.assert_array_equal(values, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "shape, patch_size", [((3, 37, 32, 32), 7), ((2, 5, 20, 13), 3), ((2, 4, 9, 30), 9)]
)
def test_fca_reference_kernel_equals_torch(generator, dtype, shape, patch_size):
    x = torch.randn(shape, generator=generator, dtype=dtype)
    x[..., ::3] = x[..., ::3].round()  # ties
    kernel = fca_reference(x, patch_size, implementation="numba")
    assert kernel.dtype == dtype
    assert torch.equal(kernel, fca_reference(x, patch_size, implementation="torch"))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert torch.equal(fca_reference(x, patch_size, implementation="numba"), kernel)
    finally:
        torch.set_num_threads(threads)


def count_kernel_calls(monkeypatch, name):
    """The shapes of the first argument of every call to the CPU kernel's function ``name``."""
    calls = []
    kernel = fca._cpu_kernel()
    original = getattr(kernel, name)

    def counted(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(kernel, name, counted)
    return calls


def test_fca_reference_kernel_dispatch(generator, monkeypatch):
    calls = count_kernel_calls(monkeypatch, "tile_references")
    x = torch.rand(2, 3, 9, 9, generator=generator)
    feature_correspondence_analysis(x)  # the default on the CPU, as FCA's reference
    assert calls == [(2, 3, 9, 9)]
    feature_correspondence_analysis(x, implementation="torch")
    half = fca_reference(x.half())  # half precision: torch's sort, no error
    assert len(calls) == 1 and half.dtype == torch.float16
    with pytest.raises(ValueError, match="float32 or float64"):
        fca_reference(x.half(), implementation="numba")
    with pytest.raises(ValueError, match="implementation"):
        fca_reference(x, implementation="fast")
    with pytest.raises(ValueError, match="no 11 x 11 tile"):  # small maps: fca_reference pads
        fca_cpu.tile_references(x.numpy(), 11)
    assert not fca_cpu.sorting_network(9).flags.writeable  # cached, shared


def test_fca_reference_is_per_image(generator):
    x = torch.rand(2, 3, 14, 14, generator=generator)
    y = x.clone()
    y[1] = torch.rand(3, 14, 14, generator=generator) * 5
    torch.testing.assert_close(fca_reference(x)[0], fca_reference(y)[0], rtol=0, atol=0)


# --------------------------------------------------------------------------- FCA maps


@pytest.mark.parametrize("shape", [(2, 3, 9, 9), (1, 4, 10, 10), (2, 2, 8, 13), (1, 2, 11, 7)])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_fca_matches_loop(generator, implementation, shape):
    x = torch.rand(shape, generator=generator)
    result = feature_correspondence_analysis(x, implementation=implementation)
    assert result.shape == (shape[0], *shape[2:]) and result.dtype == torch.float32
    assert (result - loop_fca(x)).abs().max() < 1e-5


@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_fca_matches_loop_with_given_reference(generator, implementation, per_image):
    x = torch.rand(2, 3, 9, 12, generator=generator)
    shape = (2, 3, 49) if per_image else (3, 49)
    reference = torch.sort(torch.rand(shape, generator=generator) * 1.5, dim=-1).values
    result = feature_correspondence_analysis(x, reference=reference, implementation=implementation)
    assert (result - loop_fca(x, reference=reference)).abs().max() < 1e-5


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_fca_matches_loop_with_ties_and_other_settings(generator, implementation):
    # Few distinct values: ranks of equal values must be broken as a stable sort does.
    x = torch.randint(0, 3, (2, 3, 9, 10), generator=generator).float()
    result = feature_correspondence_analysis(x, implementation=implementation)
    assert (result - loop_fca(x)).abs().max() < 1e-5
    x = torch.rand(1, 2, 8, 9, generator=generator)
    kwargs = {"patch_size": 5, "sigma_p": 1.5}
    result = feature_correspondence_analysis(
        x, **kwargs, patch_blur_kernel=3, patch_blur_sigma=0.7, implementation=implementation
    )
    expected = loop_fca(x, **kwargs, blur_kernel=3, blur_sigma=0.7)
    assert (result - expected).abs().max() < 1e-5


@pytest.mark.parametrize(
    "patch_size, shape", [(3, (1, 2, 6, 5)), (9, (1, 2, 11, 9)), (17, (1, 2, 6, 7))]
)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_fca_other_patch_sizes(generator, implementation, patch_size, shape):
    # 17 x 17 neighbourhoods need wider integer counts than 7 x 7 ones.
    x = torch.rand(shape, generator=generator)
    result = feature_correspondence_analysis(
        x, patch_size=patch_size, sigma_p=2.0, implementation=implementation
    )
    assert (result - loop_fca(x, patch_size=patch_size, sigma_p=2.0)).abs().max() < 1e-5


@pytest.mark.parametrize("patch_size, shape", [(3, (1, 3, 5, 8)), (17, (1, 2, 7, 6))])
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_fca_ties_in_small_and_wide_counts(generator, implementation, patch_size, shape):
    # Only half of the offsets are compared; the other half are read as the
    # complements of their mirrors, which must still break ties by position,
    # in 8-bit counts (3 x 3) and in wider ones (17 x 17).
    x = torch.randint(0, 2, shape, generator=generator).float()
    result = feature_correspondence_analysis(
        x, patch_size=patch_size, sigma_p=2.0, implementation=implementation
    )
    assert (result - loop_fca(x, patch_size=patch_size, sigma_p=2.0)).abs().max() < 1e-5


@pytest.mark.parametrize(
    "shape", [(1, 3, 1, 1), (1, 3, 3, 3), (2, 3, 5, 6), (1, 2, 1, 9), (2, 2, 2, 2)]
)
@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_fca_small_maps(generator, implementation, shape):
    """Maps smaller than the patch: repeated reflection, one centred tile; no crash."""
    x = torch.rand(shape, generator=generator)
    result = feature_correspondence_analysis(x, implementation=implementation)
    assert result.shape == (shape[0], *shape[2:]) and torch.isfinite(result).all()
    assert (result - loop_fca(x)).abs().max() < 1e-5
    if shape[2:] == (1, 1):
        assert torch.all(result == 0)


def test_fca_channel_chunk_does_not_change_the_result(generator):
    x = torch.rand(2, 7, 12, 10, generator=generator)
    full = feature_correspondence_analysis(x, implementation="torch")
    for chunk in (1, 3, 100):
        chunked = feature_correspondence_analysis(x, channel_chunk=chunk, implementation="torch")
        torch.testing.assert_close(chunked, full, atol=1e-6, rtol=1e-6)


def test_fca_batch_independence(generator):
    x = torch.rand(3, 4, 12, 12, generator=generator)
    y = x.clone()
    y[0] += torch.rand(4, 12, 12, generator=generator)
    y[2] = -y[2]
    maps_x = feature_correspondence_analysis(x)
    maps_y = feature_correspondence_analysis(y)
    torch.testing.assert_close(maps_x[1], maps_y[1], rtol=0, atol=0)
    torch.testing.assert_close(maps_x[1], feature_correspondence_analysis(x[1:2])[0])


def test_fca_cpu_kernel_is_the_default_on_the_cpu(generator, monkeypatch):
    calls = count_kernel_calls(monkeypatch, "rank_differences")
    x = torch.rand(2, 3, 9, 9, generator=generator)
    feature_correspondence_analysis(x)
    assert calls == [(2, 3, 15, 15)]
    feature_correspondence_analysis(x, implementation="torch")
    assert len(calls) == 1


def test_fca_cpu_kernel_agrees_with_torch_on_larger_maps(generator):
    # Many channels (two blocks of different sizes), a non-square map, float64.
    x = torch.randn(3, 37, 21, 26, generator=generator)
    for dtype, tolerance in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        kernel = feature_correspondence_analysis(x.to(dtype), implementation="numba")
        tensors = feature_correspondence_analysis(x.to(dtype), implementation="torch")
        assert kernel.dtype == dtype
        torch.testing.assert_close(kernel, tensors, rtol=tolerance, atol=tolerance)


def test_fca_cpu_kernel_is_deterministic_across_threads_and_batches(generator):
    # Fixed tasks (an image's channels in two halves): the same sums in the
    # same order whatever the thread count or the other images of the call.
    x = torch.rand(5, 9, 14, 12, generator=generator)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = feature_correspondence_analysis(x, implementation="numba")
        torch.set_num_threads(3)
        together = feature_correspondence_analysis(x, implementation="numba")
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(alone, together)
    one = feature_correspondence_analysis(x[3:4], implementation="numba")
    assert torch.equal(one[0], together[3])


def _lookup_loop(out, values, ranks, table):
    """The lookup as the plain loop the compiled lanes replace."""
    for i in range(len(out)):
        out[i] += abs(values[i] - table[ranks[i]])


def _compiled_lookup():
    """A fresh caller of the intrinsic: its code is generated now, with today's settings."""
    from numba import njit

    from skanomclust.nn.fca_lookup import LANES, add_rank_gaps16

    @njit
    def lookup(out, values, ranks, table):
        for start in range(0, len(out), LANES):
            add_rank_gaps16(out, start, values, start, ranks, table)

    return lookup


def _lookup_paths():
    """The intrinsic's code paths this machine can run: the permutes need AVX-512."""
    from skanomclust.nn import fca_lookup

    return [False] + ([True] if fca_lookup.permute_lookup_available() else [])


@pytest.mark.parametrize("permute", _lookup_paths())
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rank_dtype", [np.uint8, np.uint16])
def test_fca_table_lookup_lanes_equal_the_loop(monkeypatch, permute, dtype, rank_dtype):
    # Both code paths of the intrinsic (AVX-512 permutes, lane-by-lane loads):
    # bitwise the loop's result, for every rank of a full table, ties included.
    from skanomclust.nn import fca_lookup

    monkeypatch.setattr(fca_lookup, "permute_lookup_available", lambda: permute)
    rng = np.random.default_rng(0)
    n = 5 * fca_lookup.LANES
    table = np.sort(rng.standard_normal(fca_lookup.TABLE_SIZE)).astype(dtype)
    ranks = np.concatenate([np.arange(64), rng.integers(0, 64, n - 64)]).astype(rank_dtype)
    values = rng.standard_normal(n).astype(dtype)
    values[::7] = table[ranks[::7]]  # exact zeros
    start = rng.standard_normal(n).astype(dtype)
    expected, out = start.copy(), start.copy()
    _lookup_loop(expected, values, ranks, table)
    _compiled_lookup()(out, values, ranks, table)
    np.testing.assert_array_equal(out, expected)


def test_fca_table_lookup_follows_numba_target(monkeypatch):
    # The permutes only where numba's own code generation targets AVX-512.
    from numba.core import config

    from skanomclust.nn import fca_lookup

    monkeypatch.setattr(config, "CPU_FEATURES", "+sse2,-avx512f,+avx2")
    assert not fca_lookup.permute_lookup_available()
    monkeypatch.setattr(config, "CPU_FEATURES", "+sse2,+avx512f")
    assert fca_lookup.permute_lookup_available()


@pytest.mark.parametrize("shape", [(2, 5, 32, 32), (1, 3, 17, 35), (1, 2, 12, 9)])
def test_fca_cpu_kernel_rows_of_any_width(generator, shape):
    # Rows of whole groups of sixteen pixels, with a remainder, and shorter than sixteen.
    x = torch.randn(*shape, generator=generator)
    kernel = feature_correspondence_analysis(x, implementation="numba")
    torch.testing.assert_close(
        kernel, feature_correspondence_analysis(x, implementation="torch"), rtol=1e-5, atol=1e-5
    )


def test_fca_falls_back_to_torch_without_the_cpu_kernel(generator, monkeypatch):
    x = torch.rand(2, 3, 9, 9, generator=generator)
    expected = feature_correspondence_analysis(x, implementation="torch")
    monkeypatch.setattr(fca, "_cpu_kernel", lambda: None)
    assert torch.equal(feature_correspondence_analysis(x), expected)
    with pytest.raises(ValueError, match="compiled kernel cannot be loaded"):
        feature_correspondence_analysis(x, implementation="numba")


def test_fca_cpu_kernel_that_cannot_load_warns_once(monkeypatch):
    # A missing numba, or numba refusing to cache (no writable folder): one warning, then torch.
    monkeypatch.setitem(sys.modules, "skanomclust.nn.fca_cpu", None)
    monkeypatch.delattr(sys.modules["skanomclust.nn"], "fca_cpu", raising=False)
    with pytest.warns(RuntimeWarning, match="runs in torch"):
        assert fca._cpu_kernel.__wrapped__() is None


def test_fca_cpu_kernel_is_not_used_when_numba_compilation_is_off(monkeypatch):
    # NUMBA_DISABLE_JIT: the kernels would run as Python loops (and the lookup
    # intrinsic not at all), so FCA runs in torch, with one warning.
    from numba.core import config

    monkeypatch.setattr(config, "DISABLE_JIT", True)
    with pytest.warns(RuntimeWarning, match="NUMBA_DISABLE_JIT"):
        assert fca._cpu_kernel.__wrapped__() is None


def test_fca_with_gradients_uses_torch(generator):
    x = torch.rand(1, 2, 9, 9, generator=generator, requires_grad=True)
    maps = feature_correspondence_analysis(x)
    maps.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="gradients"):
        feature_correspondence_analysis(x, implementation="numba")
    with torch.no_grad():
        torch.testing.assert_close(
            feature_correspondence_analysis(x, implementation="numba"), maps.detach()
        )


def test_fca_finds_an_injected_defect(generator):
    x = torch.rand(1, 6, 24, 24, generator=generator)
    x[0, :, 10:13, 14:17] += 2.0
    maps = feature_correspondence_analysis(x)[0]
    y, x_ = divmod(int(maps.argmax()), 24)
    assert 9 <= y <= 13 and 13 <= x_ <= 17


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_fca_preserves_dtype_and_device(generator, device, dtype):
    x = torch.rand(2, 3, 10, 9, generator=generator).to(device=device, dtype=dtype)
    maps = feature_correspondence_analysis(x)
    assert maps.dtype == dtype and maps.device == x.device
    reference = fca_reference(x)
    assert reference.dtype == dtype and reference.device == x.device
    post = postprocess_anomaly_maps(maps)
    assert post.dtype == dtype and post.device == x.device
    expected = feature_correspondence_analysis(x.cpu().float())
    torch.testing.assert_close(maps.cpu().float(), expected, atol=2e-3, rtol=1e-2)


def test_fca_rejects_bad_arguments(generator):
    x = torch.rand(1, 2, 8, 8, generator=generator)
    with pytest.raises(ValueError, match="odd"):
        feature_correspondence_analysis(x, patch_size=6)
    with pytest.raises(ValueError, match="shape"):
        feature_correspondence_analysis(x[0])
    with pytest.raises(ValueError, match="reference"):
        feature_correspondence_analysis(x, reference=torch.zeros(2, 25))
    with pytest.raises(ValueError, match="channel_chunk"):
        feature_correspondence_analysis(x, channel_chunk=0)
    with pytest.raises(ValueError, match="implementation"):
        feature_correspondence_analysis(x, implementation="fast")
    with pytest.raises(ValueError, match="meta"):
        feature_correspondence_analysis(x.to("meta"), implementation="numba")
    with pytest.raises(TypeError):
        feature_correspondence_analysis(x.long())


# --------------------------------------------------------------------------- post-processing


def test_postprocess_blurs_then_clears_the_border(generator):
    maps = torch.rand(2, 12, 14, generator=generator)
    blurred = TF.gaussian_blur(maps, [5, 5], [1.0, 1.0])
    kept = postprocess_anomaly_maps(maps, border=0)
    torch.testing.assert_close(kept, blurred, atol=1e-6, rtol=0)
    cleared = postprocess_anomaly_maps(maps, border=3)
    assert torch.all(cleared[:, :3] == 0) and torch.all(cleared[:, -3:] == 0)
    assert torch.all(cleared[:, :, :3] == 0) and torch.all(cleared[:, :, -3:] == 0)
    torch.testing.assert_close(cleared[:, 3:-3, 3:-3], blurred[:, 3:-3, 3:-3], atol=1e-6, rtol=0)
    unblurred = postprocess_anomaly_maps(maps, blur_sigma=None, border=0)
    torch.testing.assert_close(unblurred, maps, rtol=0, atol=0)
    assert unblurred is not maps


@pytest.mark.parametrize("border", [6, 7, 100])
def test_postprocess_border_covering_the_map_clears_everything(generator, border):
    maps = torch.rand(1, 12, 15, generator=generator) + 1
    assert torch.all(postprocess_anomaly_maps(maps, border=border) == 0)


def test_postprocess_small_maps_and_bad_border(generator):
    maps = torch.rand(3, 2, 3, generator=generator)
    out = postprocess_anomaly_maps(maps, border=0)
    assert out.shape == maps.shape and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="border"):
        postprocess_anomaly_maps(maps, border=-1)


# --------------------------------------------------------------------------- channel reduction


def test_principal_channels_match_sklearn_pca(generator):
    from sklearn.decomposition import PCA

    mixing = torch.randn(6, 10, generator=generator, dtype=torch.float64)
    samples = torch.randn(500, 6, generator=generator, dtype=torch.float64) @ mixing + 3.0
    components, mean = principal_channels(samples, 4)
    assert components.shape == (4, 10) and components.dtype == torch.float64
    torch.testing.assert_close(mean, samples.mean(0))
    torch.testing.assert_close(components @ components.T, torch.eye(4, dtype=torch.float64))
    reference = PCA(4, svd_solver="full").fit(samples.numpy()).components_
    # same directions up to sign; the sign makes each row's largest entry positive
    signs = np.sign((components.numpy() * reference).sum(1))
    np.testing.assert_allclose(components.numpy(), reference * signs[:, None], atol=1e-8)
    rows = torch.arange(4)
    assert (components[rows, components.abs().argmax(1)] > 0).all()
    # the sign convention makes the result independent of the samples' sign
    flipped, _ = principal_channels(-samples, 4)
    torch.testing.assert_close(flipped, components)


def test_project_channels_is_the_centred_coordinates(generator):
    features = torch.randn(2, 5, 3, 4, generator=generator)
    components, mean = principal_channels(features.permute(0, 2, 3, 1).reshape(-1, 5), 2)
    out = project_channels(features, components, mean)
    assert out.shape == (2, 2, 3, 4)
    expected = (features.permute(0, 2, 3, 1).reshape(-1, 5) - mean) @ components.T
    torch.testing.assert_close(out.permute(0, 2, 3, 1).reshape(-1, 2), expected)
    full, full_mean = principal_channels(features.permute(0, 2, 3, 1).reshape(-1, 5), 5)
    back = torch.einsum("nkhw,kc->nchw", project_channels(features, full, full_mean), full)
    torch.testing.assert_close(back + full_mean[:, None, None], features, atol=1e-5, rtol=1e-5)


def test_channel_reduction_rejects_bad_arguments(generator):
    samples = torch.randn(4, 3, generator=generator)
    for bad in (0, 4, 2.0):
        with pytest.raises(ValueError, match="n_components"):
            principal_channels(samples, bad)
    with pytest.raises(ValueError, match="samples"):
        principal_channels(samples[None], 1)
    with pytest.raises(ValueError, match="do not match"):
        project_channels(torch.randn(1, 4, 2, 2), torch.eye(3), torch.zeros(3))
