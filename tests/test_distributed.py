"""The streaming pass on a dask.distributed LocalCluster of 2 worker processes."""

import csv
import time

import numpy as np
import pytest
from PIL import Image

distributed = pytest.importorskip("dask.distributed")

from run_helpers import RUN_PARAMS, assert_close, run_images  # noqa: E402

from skanomclust.cli import main  # noqa: E402
from skanomclust.run import assign_images, cluster_images  # noqa: E402

# one torch thread, as each Dask worker here: fast on a busy machine (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = dict(
    weights=None, image_size=32, params=RUN_PARAMS, sample_size=8, chunk_size=4, random_state=0
)


@pytest.fixture(scope="module")
def images():
    return run_images(n_normal=10, n_per_defect=5)  # 20: 8 fitted, 12 assigned in 3+ chunks


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def single(images):
    return cluster_images(images, 3, **SETTINGS)


def test_labels_equal_the_single_process_run(images, single, client, monkeypatch):
    scatters = []
    original = client.scatter

    def count(data, *args, **kwargs):
        scatters.append(kwargs.get("broadcast"))
        return original(data, *args, **kwargs)

    monkeypatch.setattr(client, "scatter", count)
    with distributed.get_task_stream(client) as stream:
        result = cluster_images(images, 3, client=client, **SETTINGS)
    assert scatters == [True]  # the model, to every worker, once per run
    tasks = [t for t in stream.data if str(t["key"]).startswith("skanomclust-")]
    assert len(tasks) >= 3  # one task per chunk with images to assign
    assert {t["worker"] for t in tasks} <= set(client.scheduler_info()["workers"])
    np.testing.assert_array_equal(result.sample_indices, single.sample_indices)
    np.testing.assert_array_equal(result.labels, single.labels)
    assert_close(result.anomaly_maps, single.anomaly_maps)
    assert_close(result.descriptors, single.descriptors)


def test_assign_images_on_the_cluster(images, single, client, tmp_path):
    chunks = []
    result = assign_images(
        single.model,
        images,
        chunk_size=6,
        client=client,
        work_dir=tmp_path / "work",
        on_chunk=lambda indices, chunk: chunks.append(np.array(indices)),
    )
    np.testing.assert_array_equal(result.labels, single.labels)
    np.testing.assert_array_equal(np.concatenate(chunks), np.arange(len(images)))
    assert len(list((tmp_path / "work" / "chunks").glob("*.npz"))) == len(chunks)


def test_command_line_with_a_scheduler_address(images, single, client, tmp_path, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    out = tmp_path / "out"
    args = ["cluster", str(folder), "-o", str(out), "-k", "3", "--quiet"]
    args += ["--weights", "none", "--image-size", "32", "--sample-size", "8"]
    args += ["--chunk-size", "4", "--scheduler", client.scheduler.address]
    for name, value in RUN_PARAMS.items():
        args += ["--param", f"{name}={value}"]
    with distributed.get_task_stream(client) as stream:
        assert main(args) == 0, capsys.readouterr().err
    assert any(str(t["key"]).startswith("skanomclust-") for t in stream.data)
    with open(out / "assignments.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["path"] for row in rows] == [f"{i:03d}.png" for i in range(len(images))]
    # PNG files hold the arrays exactly: the same labels as the in-memory run
    np.testing.assert_array_equal([int(row["cluster"]) for row in rows], single.labels)
    assert not list(tmp_path.glob(".out.partial"))  # the work folder is removed when done


def _our_tasks(dask_scheduler):
    return [str(key) for key in dask_scheduler.tasks if str(key).startswith("skanomclust-")]


def test_interrupted_run_cancels_its_tasks_and_resumes(images, single, client, tmp_path):
    work = tmp_path / "work"
    in_sample = np.isin(np.arange(len(images)), single.sample_indices)

    def interrupt(indices, chunk):
        if not in_sample[indices].all():  # the first chunk that the workers assigned
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as interrupted:
        cluster_images(images, 3, client=client, work_dir=work, on_chunk=interrupt, **SETTINGS)
    # the interrupted run's futures are released at once, not when its traceback goes
    deadline = time.monotonic() + 10
    while client.run_on_scheduler(_our_tasks) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert client.run_on_scheduler(_our_tasks) == []
    del interrupted
    assert list((work / "chunks").glob("*.npz"))
    resumed = cluster_images(images, 3, client=client, work_dir=work, **SETTINGS)
    np.testing.assert_array_equal(resumed.labels, single.labels)
