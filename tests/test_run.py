"""The run API: fit on a sample, stream the rest in chunks, resume from a work folder."""

import copy

import joblib
import numpy as np
import pytest
from run_helpers import RUN_PARAMS, assert_close, run_images

from skanomclust import TextureFeatureExtractor
from skanomclust import _streaming as streaming_module
from skanomclust import run as run_module
from skanomclust.run import assign_images, cluster_images

# one torch thread: fast on a busy machine (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")

# Tiny but complete: random-weights backbone, 32 px images, a few VAE steps.
SETTINGS = dict(weights=None, image_size=32, params=RUN_PARAMS)
N_SAMPLE, CHUNK = 10, 3


@pytest.fixture(scope="module")
def images():
    return run_images(n_normal=12, n_per_defect=6)  # 24 images


def _run(images, **kwargs):
    return cluster_images(images, 3, **{**SETTINGS, "random_state": 0, **kwargs})


def _stop_at_second_chunk():
    """An ``on_chunk`` that interrupts the run as its second chunk is passed on."""
    emitted = []

    def interrupt(indices, chunk):
        emitted.append(indices)
        if len(emitted) == 2:
            raise KeyboardInterrupt

    return interrupt


def _chunk_times(work):
    """``{file name: modification time}`` of the chunks finished in a work folder."""
    return {p.name: p.stat().st_mtime_ns for p in (work / "chunks").glob("*.npz")}


@pytest.fixture(scope="module")
def sampled(images):
    """A run fitted on 10 of the 24 images, in chunks of 3; records what it computed."""
    calls, chunks = [], []
    original = TextureFeatureExtractor.transform

    def spy(self, X):
        calls.append(len(X))
        return original(self, X)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(TextureFeatureExtractor, "transform", spy)
        result = _run(
            images,
            sample_size=N_SAMPLE,
            chunk_size=CHUNK,
            on_chunk=lambda indices, chunk: chunks.append((np.array(indices), chunk)),
        )
    return result, calls, chunks


def test_result_holds_everything_a_report_needs(images, sampled):
    result, _, _ = sampled
    n = len(images)
    for key in (
        "labels",
        "anomaly_maps",
        "image_scores",
        "descriptors",
        "n_clusters",
        "timings",
        "model",
        "sample_indices",
    ):
        assert key in result, key
    assert result.labels.shape == (n,) and set(result.labels) <= {0, 1, 2}
    assert result.n_clusters == 3
    maps = np.asarray(result.anomaly_maps)
    assert maps.dtype == np.float32 and maps.ndim == 3 and len(maps) == n
    assert result.image_scores.shape == (n,) and np.isfinite(result.image_scores).all()
    assert result.descriptors.ndim == 2 and len(result.descriptors) == n
    assert {"features", "localizer", "clustering", "assign: features"} <= set(result.timings)


def test_whole_jobs_tune_the_allocator_for_batch_loops(images, sampled, monkeypatch):
    calls = []
    monkeypatch.setattr(run_module, "keep_freed_blocks_for_reuse", lambda: calls.append(1))
    assign_images(sampled[0].model, images[:2])
    assert calls == [1]
    _run(images[:4], sample_size=4)
    assert calls == [1, 1]


def test_fits_on_the_sample_and_assigns_the_rest(images, sampled):
    result, _, _ = sampled
    sample = result.sample_indices
    assert len(sample) == N_SAMPLE and len(set(sample)) == N_SAMPLE
    assert np.all(np.diff(sample) > 0) and sample.max() < len(images)
    clustering = result.model.steps[-1][1]
    assert len(clustering.labels_) == N_SAMPLE  # only the sample was fitted
    np.testing.assert_array_equal(result.labels[sample], clustering.labels_)
    again = assign_images(result.model, images, chunk_size=5)
    np.testing.assert_array_equal(again.labels, result.labels)
    assert_close(again.image_scores, result.image_scores)
    assert len(again.sample_indices) == 0


def test_features_exist_for_a_chunk_or_the_sample_only(images, sampled):
    _, calls, _ = sampled
    # one call on the fitted sample, then one per chunk with images outside the sample
    assert max(calls) <= max(N_SAMPLE, CHUNK) < len(images)
    assert calls.count(N_SAMPLE) == 1
    assert sum(calls) - N_SAMPLE == len(images) - N_SAMPLE  # each other image once
    assert all(c <= CHUNK for c in calls[1:])


def test_on_chunk_sees_every_image_once_in_input_order(images, sampled):
    result, _, chunks = sampled
    seen = np.concatenate([indices for indices, _ in chunks])
    np.testing.assert_array_equal(seen, np.arange(len(images)))
    assert all(len(indices) <= CHUNK for indices, _ in chunks)
    for indices, chunk in chunks:
        np.testing.assert_array_equal(chunk.labels, result.labels[indices])
        np.testing.assert_array_equal(chunk.image_scores, result.image_scores[indices])


def test_chunk_size_does_not_change_the_result(images, sampled):
    result, _, _ = sampled
    one_chunk = _run(images, sample_size=N_SAMPLE, chunk_size=1000)
    np.testing.assert_array_equal(one_chunk.sample_indices, result.sample_indices)
    np.testing.assert_array_equal(one_chunk.labels, result.labels)
    assert_close(one_chunk.anomaly_maps, result.anomaly_maps)


def test_interrupted_run_resumes_without_redoing_finished_chunks(
    images, sampled, tmp_path, monkeypatch
):
    reference, _, _ = sampled
    work = tmp_path / "work"
    with pytest.raises(KeyboardInterrupt):
        _run(
            images,
            sample_size=N_SAMPLE,
            chunk_size=CHUNK,
            work_dir=work,
            on_chunk=_stop_at_second_chunk(),
        )
    assert (work / "fit.npz").exists() and (work / "model.joblib").exists()
    done = _chunk_times(work)
    assert done, "no chunk was finished before the interruption"
    assert not list(work.rglob(".*.tmp"))  # only complete files

    computed, fitted = [], []
    original_assign, original_fit = streaming_module.assign_chunk, run_module._fit

    def count_assign(model, chunk_images):
        computed.append(len(chunk_images))
        return original_assign(model, chunk_images)

    def count_fit(*args):
        fitted.append(1)
        return original_fit(*args)

    monkeypatch.setattr(streaming_module, "assign_chunk", count_assign)
    monkeypatch.setattr(run_module, "_fit", count_fit)
    chunks = []
    resumed = _run(
        images,
        sample_size=N_SAMPLE,
        chunk_size=CHUNK,
        work_dir=work,
        on_chunk=lambda indices, chunk: chunks.append(np.array(indices)),
    )
    assert not fitted  # the fitted model was loaded, not refitted
    in_sample = np.isin(np.arange(len(images)), reference.sample_indices)
    to_assign = sum(1 for s in range(0, len(images), CHUNK) if not in_sample[s : s + CHUNK].all())
    assert 0 < len(done) < to_assign  # interrupted part-way
    assert len(computed) == to_assign - len(done)
    after = _chunk_times(work)
    assert {name: after[name] for name in done} == done  # finished chunks untouched
    assert len(after) == to_assign
    np.testing.assert_array_equal(np.concatenate(chunks), np.arange(len(images)))
    np.testing.assert_array_equal(resumed.sample_indices, reference.sample_indices)
    np.testing.assert_array_equal(resumed.labels, reference.labels)
    assert_close(resumed.anomaly_maps, reference.anomaly_maps)

    # other settings (another seed) are refused rather than mixed with these results
    with pytest.raises(ValueError, match="other images or settings"):
        _run(images, sample_size=N_SAMPLE, chunk_size=CHUNK, work_dir=work, random_state=1)
    with pytest.raises(ValueError, match="other images or settings"):
        _run(images[::-1], sample_size=N_SAMPLE, chunk_size=CHUNK, work_dir=work)
    assert _chunk_times(work) == after


def test_sample_size_forms(images):
    sample = run_module._sample_indices
    seeds = run_module.Seeds(0)
    assert len(sample(24, "auto", seeds)) == 24  # all images up to AUTO_SAMPLE_SIZE
    assert len(sample(24, 0.5, seeds)) == 12
    assert len(sample(24, 100, seeds)) == 24
    np.testing.assert_array_equal(sample(24, 5, run_module.Seeds(0)), sample(24, 5, seeds))
    with pytest.raises(ValueError):
        sample(24, 1.5, seeds)
    with pytest.raises(ValueError):
        sample(24, 1, seeds)


def test_assignment_resumes_only_with_the_same_model(images, sampled, tmp_path):
    result, _, _ = sampled
    work = tmp_path / "assign"
    with pytest.raises(KeyboardInterrupt):
        assign_images(
            result.model, images, chunk_size=5, work_dir=work, on_chunk=_stop_at_second_chunk()
        )
    done = _chunk_times(work)
    assert len(done) == 2
    joblib.dump(result.model, tmp_path / "model.joblib")
    loaded = joblib.load(tmp_path / "model.joblib")  # the same model after a save and a load
    other = copy.deepcopy(loaded)
    other.steps[-1][1].cluster_centers_ = other.steps[-1][1].cluster_centers_ + 1.0
    with pytest.raises(ValueError, match="other images or settings"):
        assign_images(other, images, chunk_size=5, work_dir=work)
    resumed = assign_images(loaded, images, chunk_size=5, work_dir=work)
    np.testing.assert_array_equal(resumed.labels, result.labels)
    assert {name: (work / "chunks" / name).stat().st_mtime_ns for name in done} == done
