"""BlindAnomalyLocalizer: shapes, determinism, modes, per-sample transform, errors."""

import numpy as np
import pytest
import torch
from sklearn.utils._param_validation import InvalidParameterError

from skanomclust import BlindAnomalyLocalizer
from skanomclust.contract import (
    append_anomaly_maps,
    empty_feature_maps,
    split_localizer_output,
    validate_feature_maps,
)
from skanomclust.localization import resize_anomaly_maps
from skanomclust.nn import feature_correspondence_analysis, postprocess_anomaly_maps
from skanomclust.nn.localization import (
    fca_input,
    localize_batch,
    localize_images,
    sample_fca_input_pixels,
)

FAST = dict(n_steps=20, pixels_per_step=256, hidden_channels=32, latent_channels=8)


@pytest.fixture
def maps_with_outlier():
    rng = np.random.default_rng(0)
    X = rng.normal(0, 0.1, (6, 8, 20, 20)).astype(np.float32)
    X[2, :, 9:12, 9:12] += 3.0  # one anomalous blob in image 2
    return X


@pytest.mark.parametrize("mode", ["vae_fca", "fca", "vae"])
def test_shapes_and_last_channel(mode, maps_with_outlier):
    X = maps_with_outlier
    localizer = BlindAnomalyLocalizer(mode, random_state=0, border=0, **FAST).fit(X)
    out = localizer.transform(X)
    assert out.shape == (6, 9, 20, 20) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:, :8], X)
    np.testing.assert_allclose(out[:, 8], localizer.anomaly_maps(X))
    assert (localizer.vae_ is None) == (mode == "fca")


def test_a_channel_slice_of_a_larger_buffer_is_used_without_a_copy(maps_with_outlier):
    buffer = np.zeros((6, 9, 20, 20), dtype=np.float32)
    buffer[:, :8] = maps_with_outlier
    view = buffer[:, :8]
    maps, _ = validate_feature_maps(BlindAnomalyLocalizer(), view, reset=True)
    assert np.shares_memory(maps, buffer)
    localizer = BlindAnomalyLocalizer(random_state=0, border=0, **FAST).fit(view)
    reference = BlindAnomalyLocalizer(random_state=0, border=0, **FAST).fit(maps_with_outlier)
    np.testing.assert_array_equal(
        localizer.anomaly_maps(view), reference.anomaly_maps(maps_with_outlier)
    )
    # other layouts are copied into C order first
    fortran = np.asfortranarray(maps_with_outlier)
    maps, _ = validate_feature_maps(BlindAnomalyLocalizer(), fortran, reset=True)
    assert maps.flags.c_contiguous and not np.shares_memory(maps, fortran)


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_copy_false_fills_the_spare_channel_instead_of_copying(dtype, maps_with_outlier):
    features = empty_feature_maps(maps_with_outlier.shape, dtype)
    features[...] = maps_with_outlier
    assert features.base.shape == (6, 9, 20, 20)
    plain = maps_with_outlier.astype(dtype)
    reference = BlindAnomalyLocalizer(random_state=0, border=0, **FAST).fit(plain)
    expected = reference.transform(plain)

    # copy=True (the default): a new array, the input untouched
    copied = BlindAnomalyLocalizer(random_state=0, border=0, **FAST).fit_transform(features)
    assert not np.shares_memory(copied, features)
    np.testing.assert_array_equal(copied, expected)
    # copy=False: the maps go into the spare channel, the buffer is returned
    localizer = BlindAnomalyLocalizer(random_state=0, border=0, copy=False, **FAST)
    shared = localizer.fit_transform(features)
    assert shared is features.base
    np.testing.assert_array_equal(shared, expected)
    # ... and a later call on the same features writes there again (the documented cost)
    again = localizer.transform(features)
    assert again is features.base
    # without a spare channel behind the input, copy=False copies
    assert not np.shares_memory(localizer.transform(plain), plain)


def test_append_anomaly_maps_uses_only_a_whole_spare_channel():
    features = empty_feature_maps((4, 3, 5, 5), np.float32)
    features[...] = 1.0
    maps = np.full((4, 5, 5), 2.0, np.float32)
    for other in (features[:2], features[:, :2], features.astype(np.float16)):
        out = append_anomaly_maps(other, maps[: len(other)], copy=False)
        assert not np.shares_memory(out, other)
    out = append_anomaly_maps(features, maps, copy=False)
    assert out is features.base
    split_features, split_maps = split_localizer_output(out)
    np.testing.assert_array_equal(split_features, features)
    np.testing.assert_array_equal(split_maps, maps)


def test_append_anomaly_maps_refuses_maps_the_features_dtype_cannot_hold():
    features = empty_feature_maps((3, 2, 4, 4), np.float16)
    features[...] = 0.5
    spare = features.base[:, -1].copy()
    maps = np.zeros((3, 4, 4), np.float32)
    maps[1, 2, 2] = 1e6  # beyond float16's 65504: the cast would give infinity
    with pytest.raises(ValueError, match=r"image\(s\) 1 \(1 of 3\) exceed the float16 range"):
        append_anomaly_maps(features, maps, copy=False)
    np.testing.assert_array_equal(features.base[:, -1], spare)  # nothing half-written
    assert np.isfinite(append_anomaly_maps(features.astype(np.float32), maps)).all()
    maps[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"image\(s\) 0 \(1 of 3\) hold NaN"):
        append_anomaly_maps(features.astype(np.float32), maps)


def test_a_diverged_vae_is_reported_by_the_localizer_not_the_next_step(maps_with_outlier):
    half = maps_with_outlier.astype(np.float16)
    localizer = BlindAnomalyLocalizer(random_state=0, **FAST).fit(half)
    with torch.no_grad():  # what a diverged training leaves: enormous reconstructions
        localizer.vae_.decoder[-2].weight.mul_(1e9)
    with pytest.raises(ValueError, match="diverged: check the localizer's loss_curve_"):
        localizer.transform(half)


def test_half_precision_features_give_the_same_maps(maps_with_outlier):
    X = maps_with_outlier
    half = X.astype(np.float16)
    full_out = BlindAnomalyLocalizer(random_state=0, border=0, **FAST).fit_transform(X)
    half_out = BlindAnomalyLocalizer(random_state=0, border=0, **FAST).fit_transform(half)
    assert half_out.dtype == np.float16  # the features travel on at the input's precision
    np.testing.assert_array_equal(half_out[:, :-1], half)
    assert np.corrcoef(full_out[:, -1].ravel(), half_out[:, -1].ravel())[0, 1] > 0.999
    assert np.argmax(half_out[:, -1].reshape(6, -1).max(axis=1)) == 2


@pytest.mark.parametrize("mode", ["vae_fca", "fca", "vae"])
def test_the_anomaly_is_found(mode, maps_with_outlier):
    localizer = BlindAnomalyLocalizer(mode, random_state=0, border=0, **FAST)
    maps = localizer.fit(maps_with_outlier).anomaly_maps(maps_with_outlier)
    peak = np.unravel_index(np.argmax(maps[2]), maps[2].shape)
    assert 7 <= peak[0] <= 13 and 7 <= peak[1] <= 13
    scores = localizer.decision_function(maps_with_outlier)
    assert np.argmax(scores) == 2


def test_position_baseline_is_the_median_of_the_training_maps(maps_with_outlier):
    X = maps_with_outlier
    raw = BlindAnomalyLocalizer("fca", baseline=None).fit(X)
    localizer = BlindAnomalyLocalizer("fca").fit(X)
    assert raw.baseline_ is None and localizer.baseline_.shape == (20, 20)
    raw_maps = raw.anomaly_maps(X)
    np.testing.assert_array_equal(localizer.baseline_, np.sort(raw_maps, axis=0)[2])
    maps = localizer.anomaly_maps(X)
    np.testing.assert_allclose(maps, raw_maps - localizer.baseline_, rtol=1e-6)
    np.testing.assert_array_equal(np.sort(maps, axis=0)[2], 0.0)  # typical is now zero
    # fit_transform computes the maps once, with the same result
    np.testing.assert_array_equal(BlindAnomalyLocalizer("fca").fit_transform(X)[:, -1], maps)
    np.testing.assert_array_equal(localizer.transform(X)[:, -1], maps)


def test_position_baseline_keeps_defects_at_the_border():
    rng = np.random.default_rng(0)
    X = rng.normal(0, 0.1, (12, 8, 20, 20)).astype(np.float32)
    X[:, :, :, :2] += np.linspace(0.5, 1.0, 8, dtype=np.float32)[:, None, None]  # in all
    X[5, :, 0:3, 9:12] += 3.0  # a defect at the top edge of image 5
    with_baseline = BlindAnomalyLocalizer("fca").fit(X)
    maps = with_baseline.anomaly_maps(X)
    assert np.argmax(with_baseline.decision_function(X)) == 5
    peak = np.unravel_index(np.argmax(maps[5]), maps[5].shape)
    assert peak[0] <= 3 and 8 <= peak[1] <= 12
    # the paper's frame erases that defect
    framed = BlindAnomalyLocalizer("fca", baseline=None, border=5).fit(X)
    assert framed.anomaly_maps(X)[5, :3].max() == 0.0


def test_position_baseline_needs_maps_of_the_fitted_size(maps_with_outlier):
    localizer = BlindAnomalyLocalizer("fca").fit(maps_with_outlier)
    with pytest.raises(ValueError, match=r"\(20, 20\) maps this localizer was fitted on"):
        localizer.transform(maps_with_outlier[:, :, :16, :16])
    unfitted_size = BlindAnomalyLocalizer("fca", baseline=None).fit(maps_with_outlier)
    assert unfitted_size.transform(maps_with_outlier[:, :, :16, :16]).shape == (6, 9, 16, 16)


@pytest.mark.parametrize("mode", ["vae_fca", "fca"])
def test_fca_reads_the_projected_input(mode, maps_with_outlier):
    X = maps_with_outlier
    localizer = BlindAnomalyLocalizer(mode, fca_components=3, random_state=0, **FAST).fit(X)
    components, mean = localizer.fca_components_, localizer.fca_mean_
    assert components.shape == (3, 8) and mean.shape == (8,)
    np.testing.assert_allclose(components @ components.T, np.eye(3), atol=1e-5)
    # the maps are FCA of the projected residuals (or scaled features), post-processed
    with torch.inference_mode():
        source = fca_input(torch.from_numpy(X), localizer.vae_)
        projected = torch.einsum(
            "nchw,kc->nkhw",
            source - torch.from_numpy(mean)[:, None, None],
            torch.from_numpy(components),
        )
        expected = postprocess_anomaly_maps(feature_correspondence_analysis(projected), border=0)
    expected = expected.numpy() - localizer.baseline_
    np.testing.assert_allclose(localizer.anomaly_maps(X), expected, rtol=1e-4, atol=1e-5)
    # the defect survives the projection
    assert np.argmax(localizer.decision_function(X)) == 2


def test_no_projection_without_fewer_components_than_channels(maps_with_outlier):
    X = maps_with_outlier
    maps = {}
    for k in (None, 8, 96):
        localizer = BlindAnomalyLocalizer(fca_components=k, random_state=0, **FAST).fit(X)
        assert localizer.fca_components_ is None and localizer.fca_mean_ is None
        maps[k] = localizer.anomaly_maps(X)
    np.testing.assert_array_equal(maps[None], maps[8])
    np.testing.assert_array_equal(maps[None], maps[96])
    vae_only = BlindAnomalyLocalizer("vae", fca_components=2, random_state=0, **FAST).fit(X)
    assert vae_only.fca_components_ is None
    projected = BlindAnomalyLocalizer(fca_components=2, random_state=0, **FAST).fit(X)
    assert not np.allclose(projected.anomaly_maps(X), maps[None])


def test_no_projection_from_too_few_pixels():
    X = np.random.default_rng(1).normal(size=(2, 40, 4, 4)).astype(np.float32)
    few = BlindAnomalyLocalizer("fca", fca_components=4).fit(X)  # 32 pixels < 10 x 40
    assert few.fca_components_ is None
    np.testing.assert_array_equal(
        few.transform(X), BlindAnomalyLocalizer("fca", fca_components=None).fit_transform(X)
    )
    enough = BlindAnomalyLocalizer("fca", fca_components=4).fit(np.tile(X, (13, 1, 1, 1)))
    assert enough.fca_components_.shape == (4, 40)  # 26 images x 16 pixels >= 400


def test_projection_pixels_are_pixels_of_the_fca_input(maps_with_outlier):
    features = torch.from_numpy(maps_with_outlier).half()  # stored in half precision
    generator = torch.Generator().manual_seed(0)
    pixels = sample_fca_input_pixels(
        features, None, n_images=4, n_pixels=100, generator=generator, batch_size=3
    )
    assert pixels.shape == (4 * 25, 8) and pixels.dtype == torch.float32
    every_pixel = fca_input(features.float(), None).permute(0, 2, 3, 1).reshape(-1, 8)
    distances = (
        torch.cdist(pixels, every_pixel, compute_mode="donot_use_mm_for_euclid_dist")
        .min(dim=1)
        .values
    )
    assert distances.max() < 1e-6  # each sample is one of the input's pixels
    assert len(torch.unique(pixels, dim=0)) == len(pixels)  # drawn without replacement


def test_maps_of_many_images_are_the_maps_of_their_batches(maps_with_outlier):
    features = torch.from_numpy(maps_with_outlier)
    done = []
    maps = localize_images(features, None, mode="fca", batch_size=4, progress=done.append)
    assert done == [4, 2] and maps.shape == (6, 20, 20)
    torch.testing.assert_close(maps, localize_batch(features, None, mode="fca"))


def test_determinism(maps_with_outlier):
    a = BlindAnomalyLocalizer(random_state=3, **FAST).fit_transform(maps_with_outlier)
    b = BlindAnomalyLocalizer(random_state=3, **FAST).fit_transform(maps_with_outlier)
    np.testing.assert_array_equal(a, b)
    c = BlindAnomalyLocalizer(random_state=4, **FAST).fit_transform(maps_with_outlier)
    assert not np.array_equal(a, c)


def test_transform_is_per_sample(maps_with_outlier):
    X = maps_with_outlier
    localizer = BlindAnomalyLocalizer(random_state=0, batch_size=4, **FAST).fit(X)
    whole = localizer.transform(X)
    np.testing.assert_allclose(localizer.transform(X[3:4]), whole[3:4], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(localizer.transform(X[::-1]), whole[::-1], rtol=1e-5, atol=1e-6)


def test_two_dimensional_input_is_read_as_1x1_maps():
    X = np.random.default_rng(0).random((5, 4), dtype=np.float32)
    out = BlindAnomalyLocalizer(random_state=0, **FAST).fit_transform(X)
    assert out.shape == (5, 5)
    np.testing.assert_array_equal(out[:, :4], X)


@pytest.mark.parametrize("shape", [(3, 4, 1, 1), (3, 4, 3, 3), (3, 4, 5, 6), (3, 4, 2, 9)])
def test_maps_smaller_than_the_patch(shape):
    X = np.random.default_rng(0).random(shape, dtype=np.float32)
    out = BlindAnomalyLocalizer(random_state=0, border=0, **FAST).fit_transform(X)
    assert out.shape == (shape[0], shape[1] + 1, *shape[2:])
    assert np.isfinite(out).all()


def test_border_auto_scales_with_the_map():
    localizer = BlindAnomalyLocalizer(border="auto")
    assert localizer._border(64, 64) == 5
    assert localizer._border(32, 32) == 2
    assert localizer._border(32, 64) == 2


def test_resize_to_image_sizes(maps_with_outlier):
    localizer = BlindAnomalyLocalizer("fca").fit(maps_with_outlier)
    same = localizer.anomaly_maps(maps_with_outlier, image_sizes=(40, 60))
    assert same.shape == (6, 40, 60)
    mixed = localizer.anomaly_maps(maps_with_outlier[:2], image_sizes=[(40, 60), (10, 10)])
    assert [m.shape for m in mixed] == [(40, 60), (10, 10)]
    with pytest.raises(ValueError, match="2 sizes for 3 maps"):
        resize_anomaly_maps(np.zeros((3, 4, 4)), [(1, 1), (2, 2)])


@pytest.mark.parametrize(
    "params, match",
    [
        (dict(mode="gan"), "mode"),
        (dict(n_steps=-1), "n_steps"),
        (dict(border=-2), "border"),
        (dict(learning_rate=0), "learning_rate"),
        (dict(vae_precision="float16"), "vae_precision"),
    ],
)
def test_parameter_validation(params, match, maps_with_outlier):
    with pytest.raises(InvalidParameterError, match=match):
        BlindAnomalyLocalizer(**params).fit(maps_with_outlier)


@pytest.mark.parametrize(
    "X, match",
    [
        (np.zeros((2, 3, 4)), "3-D input"),
        (np.zeros((2, 3, 4, 4, 1)), "5-D input"),
        (np.full((2, 3, 4, 4), np.nan), "NaN"),
    ],
)
def test_bad_inputs(X, match):
    with pytest.raises(ValueError, match=match):
        BlindAnomalyLocalizer().fit(X)


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_non_finite_samples_are_named(dtype, maps_with_outlier):
    X = maps_with_outlier.astype(dtype)
    X[4, 1, 2, 3] = np.inf
    with pytest.raises(ValueError, match=r"contains infinity in sample\(s\) 4 \(1 of 6\)"):
        BlindAnomalyLocalizer().fit(X)
    X[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"contains NaN in sample\(s\) 1, 4 \(2 of 6\)"):
        BlindAnomalyLocalizer().fit(X)
    # large but finite float16 maps must not be mistaken for overflow
    big = np.full((3, 2, 64, 64), 60000, dtype=np.float16)
    BlindAnomalyLocalizer("fca").fit(big)


def test_channel_count_is_checked(maps_with_outlier):
    localizer = BlindAnomalyLocalizer("fca").fit(maps_with_outlier)
    with pytest.raises(ValueError, match="features"):
        localizer.transform(maps_with_outlier[:, :5])


def test_vae_precision_is_recorded_and_auto_follows_the_cpu(monkeypatch, maps_with_outlier):
    X = maps_with_outlier

    def fitted(**params):
        return BlindAnomalyLocalizer(random_state=0, **FAST, **params).fit(X)

    bf16 = fitted(vae_precision="bfloat16")
    assert bf16.vae_precision_ == "bfloat16" and fitted().vae_precision_ == "float32"
    # Mixed precision trains another network, repeatably, that still finds the blob.
    again = fitted(vae_precision="bfloat16")
    assert bf16.loss_curve_ == again.loss_curve_ != fitted().loss_curve_
    maps = split_localizer_output(bf16.transform(X))[1]
    assert np.unravel_index(maps.reshape(6, -1).max(1).argmax(), (6,)) == (2,)
    assert fitted(mode="fca", vae_precision="bfloat16").vae_precision_ is None
    cases = [((False, False), "float32"), ((True, False), "bfloat16"), ((False, True), "bfloat16")]
    for flags, expected in cases:
        names = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
        for name, flag in zip(names, flags, strict=True):
            monkeypatch.setattr(torch.cpu, name, lambda flag=flag: flag, raising=False)
        assert fitted(vae_precision="auto").vae_precision_ == expected


def test_a_model_pickled_before_vae_precision_existed_loads(maps_with_outlier):
    localizer = BlindAnomalyLocalizer(random_state=0, **FAST).fit(maps_with_outlier)
    state = localizer.__getstate__()
    del state["vae_precision"], state["vae_precision_"]  # as 0.3.5 saved it
    old = BlindAnomalyLocalizer.__new__(BlindAnomalyLocalizer)
    old.__setstate__(state)
    assert old.get_params()["vae_precision"] == "float32"
    assert old.vae_precision_ == "float32"
    np.testing.assert_array_equal(
        old.transform(maps_with_outlier), localizer.transform(maps_with_outlier)
    )
