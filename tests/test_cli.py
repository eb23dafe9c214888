"""The skanomclust command line: outputs, refusals, predict, user errors, demo."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import joblib
import numpy as np
import pytest
from PIL import Image

from skanomclust import make_blind_pipeline
from skanomclust import report as report_module
from skanomclust.cli import OUTPUT_FILES, _gate_summary, main
from skanomclust.datasets import make_synthetic_textures

# Small settings for fast testing: random weights, 64 px images, a few VAE steps.
FAST_PARAMS = {
    "localizer__n_steps": 10,
    "localizer__hidden_channels": 16,
    "localizer__latent_channels": 4,
    "localizer__border": "auto",
    "refiner__n_epochs": 1,
    "refiner__hidden_channels": 16,
}
FAST = ["--weights", "none", "--image-size", "64", "--quiet"]
for _name, _value in FAST_PARAMS.items():
    FAST += ["--param", f"{_name}={_value}"]


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


@pytest.fixture(scope="module")
def clustered(category, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "out"
    before = _snapshot(category)
    assert main(["cluster", str(category), "--output", str(out), "-k", "3", *FAST]) == 0
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


def test_cluster_writes_all_outputs(clustered, category):
    assert sorted(p.name for p in clustered.iterdir()) == sorted(OUTPUT_FILES)
    rows = _read_csv(clustered / "assignments.csv")
    assert len(rows) == 12
    assert list(rows[0]) == ["path", "cluster", "anomaly_score", "class"]
    assert all((category / row["path"]).is_file() for row in rows)
    assert {int(row["cluster"]) for row in rows} == {0, 1, 2}
    assert all(np.isfinite(float(row["anomaly_score"])) for row in rows)
    assert {row["class"] for row in rows} == {"good", "hole", "scratch"}
    # no temporary folders left next to the output
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
    assert settings["weights"]["source"] is not None
    assert settings["seed"] == 0
    assert settings["n_clusters"] == 3
    assert settings["parameters"]["localizer__n_steps"] == 10
    # the normality gate's decision is recorded: on exactly when the bimodality exceeds 5/9
    bimodality = settings["gate_bimodality"]
    gated = bimodality is not None and bimodality > 5 / 9
    assert (settings["gate_threshold"] is not None) == gated
    timings = metrics["timings_seconds"]
    assert {"features", "localizer", "refiner", "clustering", "report"} <= set(timings)
    assert set(metrics["localization"]) == {"pixel_auroc", "au_pro"}  # masks are present


def test_report_has_one_gallery_per_cluster(clustered):
    text = (clustered / "report.html").read_text()
    assert text.count('class="cluster-gallery"') == 3
    assert "<script" not in text and "http://" not in text.replace(
        'xmlns="http://www.w3.org/2000/svg"', ""
    )


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
    # the CSV holds the maxima of the maps as the refiner saw them: stored in float16
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
    assert "Report:" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == ["assignments.csv", "report.html"]
    rows = _read_csv(out / "assignments.csv")
    assert [row["path"] for row in rows] == ["good.png", "hole.png", "scratch.png"]
    assert {int(row["cluster"]) for row in rows} <= {0, 1, 2}


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
    assert sorted(p.name for p in out.iterdir()) == sorted([*OUTPUT_FILES, "notes.txt"])
    assert (out / "notes.txt").read_text() == "keep me"
    assert json.loads((out / "metrics.json").read_text())["nmi"] == pytest.approx(
        json.loads((clustered / "metrics.json").read_text())["nmi"]
    )


def test_predict_into_the_model_folder_keeps_the_model(clustered, category, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(clustered, run)
    new = category / "test" / "good"
    status = main(
        ["predict", str(run / "model.joblib"), str(new), "-o", str(run), "-q", "--overwrite"]
    )
    assert status == 0
    # model kept, assignments replaced, scores of the earlier labelled run removed
    assert sorted(p.name for p in run.iterdir()) == [
        "assignments.csv",
        "model.joblib",
        "report.html",
    ]
    assert len(_read_csv(run / "assignments.csv")) == 6


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
        (["cluster", "{broken}", *FAST], "c.png"),
        (["cluster", "{few}", "-k", "5", *FAST], "larger than the number of images"),
        (["cluster", "{few}", "--backbone", "vgg16"], "unknown backbone"),
        (["cluster", "{few}", "--backbone", "resnet18", "--weights", "offline"], "offline"),
        (["cluster", "{few}", "--weights", "{tmp}/missing.pt"], "not found"),
        (["cluster", "{few}", "--param", "localizer__nope=1"], "unknown parameter"),
        (["cluster", "{few}", "-k", "0"], "positive integer"),
        (["cluster", "{category}", "-o", "{category}/test/out"], "inside the input folder"),
        (["predict", "{tmp}/missing.joblib", "{few}"], "does not exist"),
        (["predict", "{few}/000.png", "{few}"], "cannot load model"),
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


def test_interrupt_leaves_no_output(category, tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        Path(args[0]).write_text("half a report")
        raise KeyboardInterrupt

    monkeypatch.setattr(report_module, "write_report", interrupted)
    out = tmp_path / "out"
    status = main(["cluster", str(category), "-o", str(out), "-k", "3", *FAST])
    assert status == 130
    assert "interrupted" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


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
    assert main(["demo", "--output", str(out), "--overwrite", *FAST]) == 0
    printed = capsys.readouterr().out
    assert "NMI" in printed and str(out / "report.html") in printed
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUT_FILES)
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
        timeout=120,
    )
    assert help_run.returncode == 0
    for command in ("cluster", "predict", "demo"):
        assert command in help_run.stdout


def test_gate_summary_says_what_the_gate_decided():
    off = _gate_summary(SimpleNamespace(gate_bimodality_=0.482, gate_threshold_=None))
    assert off == "normality gate off (image scores' bimodality 0.482, 5/9 = 0.556)"
    on = _gate_summary(SimpleNamespace(gate_bimodality_=0.592, gate_threshold_=0.0361))
    assert on.startswith("normality gate on at score 0.0361 (")
