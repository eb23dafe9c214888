"""The skanomclust command line: outputs, refusals, predict, user errors, resume, demo."""

import contextlib
import csv
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
from PIL import Image

from skanomclust import make_blind_pipeline
from skanomclust import report as report_module
from skanomclust._commands import OUTPUT_FILES
from skanomclust.cli import main
from skanomclust.datasets import make_synthetic_textures
from skanomclust.nn.gate import BIMODALITY_THRESHOLD

# Small settings for fast testing: random weights (--weights none), 64 px images, a
# small VAE trained for a few steps.
FAST_PARAMS = {
    "localizer__n_steps": 10,
    "localizer__pixels_per_step": 256,
    "localizer__hidden_channels": 16,
    "localizer__latent_channels": 4,
    "localizer__border": "auto",
}
FAST = ["--weights", "none", "--image-size", "64", "--quiet"]
for _name, _value in FAST_PARAMS.items():
    FAST += ["--param", f"{_name}={_value!r}"]

# What a run writes (report_files only beyond 300 images, skipped.csv only with skips).
CLUSTER_FILES = sorted(set(OUTPUT_FILES) - {"report_files", "skipped.csv"})
PREDICT_FILES = ["assignments.csv", "descriptors.npy", "report.html", "run.json"]


# One torch and BLAS thread (tests/conftest.py): fast on a busy machine.
pytestmark = pytest.mark.usefixtures("one_thread")


def _save_mvtec(root, data):
    for i, (image, mask, y) in enumerate(zip(data.images, data.masks, data.target, strict=True)):
        name = data.target_names[y]
        folder = root / "test" / name
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:03d}.png")
        if name != "good":
            folder = root / "ground_truth" / name
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask.astype(np.uint8) * 255).save(folder / f"{i:03d}_mask.png")


@pytest.fixture(scope="module")
def category(tmp_path_factory):
    """A tiny MVTec-style category: 6 good, 3 hole, 3 scratch images of 64 px."""
    data = make_synthetic_textures(
        n_normal=6,
        n_per_defect=3,
        defect_types=("hole", "scratch"),
        image_size=64,
        random_state=0,
    )
    root = tmp_path_factory.mktemp("data") / "tiles"
    _save_mvtec(root, data)
    return root


def _main(argv):
    """main(argv) with its stdout and stderr: (status, out, err)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(argv)
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def clustered(category, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "out"
    before = _snapshot(category)
    status, printed, err = _main(
        ["cluster", str(category), "--output", str(out), "-k", "3", *FAST]
    )
    assert status == 0, err
    assert err == ""  # --quiet: no progress, logs or library warnings
    assert printed.startswith("12 images in 3 clusters (sizes ")
    assert _snapshot(category) == before  # the input folder is only read
    return out


def _snapshot(folder):
    return sorted(
        (p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
    )


def _read_csv(path):
    with open(path, newline="") as stream:
        return list(csv.DictReader(stream))


def _assert_one_line_error(capsys, status):
    err = capsys.readouterr().err
    assert status != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("skanomclust"), err
    assert "error:" in lines[0]
    return lines[0]


def _report_data(path):
    text = Path(path).read_text()
    found = re.search(
        r'<script type="application/json" id="report-data">(.*?)</script>', text, re.S
    )
    return text, json.loads(found.group(1))


def test_cluster_writes_all_outputs(clustered, category):
    assert sorted(p.name for p in clustered.iterdir()) == CLUSTER_FILES
    rows = _read_csv(clustered / "assignments.csv")
    assert len(rows) == 12
    assert list(rows[0]) == ["path", "cluster", "anomaly_score", "class"]
    assert all((category / row["path"]).is_file() for row in rows)
    assert {int(row["cluster"]) for row in rows} == {0, 1, 2}
    assert all(np.isfinite(float(row["anomaly_score"])) for row in rows)
    assert {row["class"] for row in rows} == {"good", "hole", "scratch"}
    descriptors = np.load(clustered / "descriptors.npy")
    assert descriptors.dtype == np.float32 and descriptors.shape[0] == 12
    assert np.isfinite(descriptors).all()
    # no temporary or work folders left next to the output
    assert [p.name for p in clustered.parent.iterdir()] == ["out"]


def test_metrics_json(clustered):
    metrics = json.loads((clustered / "metrics.json").read_text())
    for key in ("nmi", "ari", "f1", "contingency", "matching", "settings", "timings_seconds"):
        assert key in metrics
    assert 0 <= metrics["f1"] <= 1
    assert metrics["contingency"]["classes"] == ["good", "hole", "scratch"]
    assert np.sum(metrics["contingency"]["counts"]) == 12
    settings = metrics["settings"]
    assert settings["backbone"] == "mobilenet_v2"
    assert settings["image_size"] == 64
    assert settings["weights"]["source"] == "random"  # --weights none
    assert settings["seed"] == 0
    assert settings["n_clusters"] == 3
    assert settings["n_clusters_found"] == 3
    assert settings["parameters"]["localizer__n_steps"] == 10
    # the normality gate's decision is recorded: on exactly when the bimodality exceeds 5/9
    bimodality = settings["gate_bimodality"]
    gated = bimodality is not None and bimodality > BIMODALITY_THRESHOLD
    assert (settings["gate_threshold"] is not None) == gated
    assert settings["normality_gate"].startswith(
        "normality gate on" if gated else "normality gate not needed"
    )
    assert (settings["normal_cluster"] is not None) == gated
    timings = metrics["timings_seconds"]
    expected = {"features", "localizer", "descriptors", "clustering", "report", "pixel metrics"}
    assert expected <= set(timings)
    assert set(metrics["localization"]) == {"pixel_auroc", "au_pro"}  # masks are present
    run = json.loads((clustered / "run.json").read_text())
    assert run["settings"] == settings and run["skipped"] == []


def test_report_holds_every_cluster_and_image(clustered):
    text, data = _report_data(clustered / "report.html")
    rows = _read_csv(clustered / "assignments.csv")
    assert data["summary"]["n_images"] == 12 and data["summary"]["n_clusters"] == 3
    assert [c["id"] for c in data["clusters"]] == [0, 1, 2]
    assert [c["size"] for c in data["clusters"]] == [
        sum(int(row["cluster"]) == c for row in rows) for c in range(3)
    ]
    assert data["images"]["path"] == [row["path"] for row in rows]
    assert data["images"]["cluster"] == [int(row["cluster"]) for row in rows]
    # self-contained: nothing fetched from a server
    assert "http://" not in text and "https://" not in text


def test_saved_model_is_the_fitted_pipeline(clustered, category):
    rows = _read_csv(clustered / "assignments.csv")
    files = [str(category / row["path"]) for row in rows]
    labels = np.array([int(row["cluster"]) for row in rows])
    model = joblib.load(clustered / "model.joblib")
    np.testing.assert_array_equal(model.predict(files), labels)
    # fitting the steps one by one is the same as Pipeline.fit
    pipe = make_blind_pipeline(3, weights=None, image_size=64, random_state=0)
    pipe.set_params(**FAST_PARAMS).fit(files)
    np.testing.assert_array_equal(pipe["clustering"].labels_, labels)
    scores = model["localizer"].decision_function(model["features"].transform(files))
    # the CSV holds the maxima of the maps as the next step saw them: stored in float16
    np.testing.assert_allclose([float(row["anomaly_score"]) for row in rows], scores, rtol=1e-3)


def test_predict_new_images(clustered, category, tmp_path, capsys):
    new = tmp_path / "new"
    new.mkdir()
    for name in ("good", "hole", "scratch"):
        first = sorted((category / "test" / name).iterdir())[0]
        (new / f"{name}.png").write_bytes(first.read_bytes())
    out = tmp_path / "assigned"
    capsys.readouterr()
    status = main(["predict", str(clustered / "model.joblib"), str(new), "-o", str(out), "-q"])
    assert status == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert captured.out.startswith("3 images in 3 clusters (sizes ")
    assert "Report:" in captured.out
    assert sorted(p.name for p in out.iterdir()) == PREDICT_FILES
    rows = _read_csv(out / "assignments.csv")
    assert [row["path"] for row in rows] == ["good.png", "hole.png", "scratch.png"]
    assert {int(row["cluster"]) for row in rows} <= {0, 1, 2}
    # the same images in the fitted run got the same clusters
    fitted = {row["path"]: row["cluster"] for row in _read_csv(clustered / "assignments.csv")}
    firsts = [
        sorted((category / "test" / n).iterdir())[0].relative_to(category).as_posix()
        for n in ("good", "hole", "scratch")
    ]
    assert [row["cluster"] for row in rows] == [fitted[f] for f in firsts]
    assert json.loads((out / "run.json").read_text())["settings"]["command"] == "predict"


def test_refuses_to_overwrite_then_overwrites(clustered, category, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    (out / "metrics.json").write_text("old")
    status = main(["cluster", str(category), "-o", str(out), "-k", "3", *FAST])
    assert "--overwrite" in _assert_one_line_error(capsys, status)
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "notes.txt"]
    assert (out / "metrics.json").read_text() == "old"

    status = main(
        [
            "cluster",
            str(category),
            "-o",
            str(out),
            "-k",
            "3",
            "--overwrite",
            "--no-pixel-metrics",
            *FAST,
        ]
    )
    assert status == 0
    assert "localization" not in json.loads((out / "metrics.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted([*CLUSTER_FILES, "notes.txt"])
    assert (out / "notes.txt").read_text() == "keep me"
    assert json.loads((out / "metrics.json").read_text())["nmi"] == pytest.approx(
        json.loads((clustered / "metrics.json").read_text())["nmi"]
    )
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_predict_into_the_model_folder_keeps_the_model(clustered, category, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(clustered, run)
    model_bytes = (run / "model.joblib").read_bytes()
    new = category / "test" / "good"
    status = main(
        ["predict", str(run / "model.joblib"), str(new), "-o", str(run), "-q", "--overwrite"]
    )
    assert status == 0
    # model kept, the other outputs replaced, scores of the earlier labelled run removed
    assert sorted(p.name for p in run.iterdir()) == sorted([*PREDICT_FILES, "model.joblib"])
    assert (run / "model.joblib").read_bytes() == model_bytes
    assert len(_read_csv(run / "assignments.csv")) == 6
    assert np.load(run / "descriptors.npy").shape[0] == 6


@pytest.fixture
def error_inputs(tmp_path, category):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("no images here")
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("a.png", "b.png"):
        (broken / name).write_bytes(next((category / "test" / "good").iterdir()).read_bytes())
    (broken / "c.png").write_bytes(b"not a png")
    few = tmp_path / "few"
    few.mkdir()
    sources = sorted((category / "test" / "good").iterdir())[:2]
    for name, source in zip(("000.png", "001.png"), sources, strict=True):
        (few / name).write_bytes(source.read_bytes())
    return {"empty": empty, "broken": broken, "few": few, "category": category}


@pytest.mark.parametrize(
    "args, expected",
    [
        (["cluster", "{tmp}/missing"], "does not exist"),
        (["cluster", "{empty}"], "No image files"),
        (["cluster", "{broken}", "--on-error", "stop", *FAST], "c.png"),
        (["cluster", "{few}", "-k", "5", *FAST], "larger than the number of images"),
        (["cluster", "{few}", "--backbone", "vgg16"], "unknown backbone"),
        (["cluster", "{few}", "--backbone", "resnet18", "--weights", "offline"], "offline"),
        (["cluster", "{few}", "--weights", "{tmp}/missing.pt"], "not found"),
        (["cluster", "{few}", "--param", "localizer__nope=1"], "unknown parameter"),
        (["cluster", "{few}", "--param", "localizer__n_steps=-3"], "'n_steps' parameter"),
        (["cluster", "{few}", "--param", "pooling__gate=maybe"], "'gate' parameter"),
        (["cluster", "{few}", "-k", "0"], "positive integer"),
        (["cluster", "{category}", "-o", "{category}/test/out"], "inside the input folder"),
        (["predict", "{tmp}/missing.joblib", "{few}"], "does not exist"),
        (["predict", "{few}/000.png", "{few}"], "is not a model written by"),
    ],
)
def test_user_errors(args, expected, error_inputs, tmp_path, capsys):
    paths = {**error_inputs, "tmp": tmp_path}
    args = [a.format(**paths) for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "out")]
    args += ["--quiet"]  # without it, progress logs come before the error line
    status = main(args)
    line = _assert_one_line_error(capsys, status)
    assert expected in line
    assert not (tmp_path / "out").exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_interrupt_leaves_the_output_alone_and_resume_finishes(
    category, clustered, tmp_path, monkeypatch, capsys
):
    from skanomclust import TextureFeatureExtractor

    def interrupted(*args, **kwargs):
        Path(args[0]).write_text("half a report")
        raise KeyboardInterrupt

    monkeypatch.setattr(report_module, "write_report", interrupted)
    out = tmp_path / "out"
    status = main(["cluster", str(category), "-o", str(out), "-k", "3", *FAST])
    assert status == 130
    err = capsys.readouterr().err
    # no output and no temporary folder; only the work folder that --resume continues
    assert [p.name for p in tmp_path.iterdir()] == [".out.partial"]
    assert err.strip().splitlines() == [
        "skanomclust: interrupted; the output folder was left as it was",
        f"skanomclust: the finished part of this run is kept in {tmp_path / '.out.partial'}; "
        "the same command with --resume continues it",
    ]

    monkeypatch.undo()

    def no_refit(self, *args, **kwargs):
        raise AssertionError("--resume fitted the backbone again")

    monkeypatch.setattr(TextureFeatureExtractor, "fit", no_refit)
    status = main(["cluster", str(category), "-o", str(out), "-k", "3", "--resume", *FAST])
    assert status == 0, capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
    assert (out / "assignments.csv").read_text() == (clustered / "assignments.csv").read_text()


def test_interrupt_during_start_up_is_one_line(monkeypatch, capsys):
    import skanomclust.cli

    def interrupted():
        raise KeyboardInterrupt

    monkeypatch.setattr(skanomclust.cli, "build_parser", interrupted)
    assert main(["cluster", "x", "-o", "y"]) == 130
    captured = capsys.readouterr()
    assert captured.err == "skanomclust: interrupted; the output folder was left as it was\n"
    assert captured.out == ""


def test_demo_runs_offline_on_the_synthetic_set(tmp_path, monkeypatch, capsys):
    import skanomclust.datasets

    def small(random_state=None):
        return make_synthetic_textures(
            n_normal=6,
            n_per_defect=2,
            defect_types=("spot", "crack"),
            image_size=64,
            random_state=random_state,
        )

    monkeypatch.setattr(skanomclust.datasets, "make_synthetic_textures", small)
    out = tmp_path / "demo"
    loud = [arg for arg in FAST if arg != "--quiet"]
    assert main(["demo", "--output", str(out), "--overwrite", *loud]) == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "NMI" in printed and str(out / "report.html") in printed
    # logs on stderr, but no library warning (e.g. torch's on read-only anomaly maps)
    assert "Writing the report ..." in captured.err
    assert [line for line in captured.err.splitlines() if "warning" in line] == []
    assert sorted(p.name for p in out.iterdir()) == CLUSTER_FILES
    assert json.loads((out / "metrics.json").read_text())["n_clusters"] == 3


def test_console_script_in_a_subprocess(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "skanomclust",
            "cluster",
            str(tmp_path / "missing"),
            "-o",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert run.returncode == 2
    assert run.stderr.strip().splitlines() == [
        f"skanomclust: error: input folder {str(tmp_path / 'missing')!r} does not exist"
    ]
    assert run.stdout == ""
    help_run = subprocess.run(
        [sys.executable, "-m", "skanomclust", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert help_run.returncode == 0
    for command in ("cluster", "predict", "demo"):
        assert command in help_run.stdout
