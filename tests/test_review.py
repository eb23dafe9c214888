"""apply-review: a review of a run becomes a labelled data set and a model of the names."""

import csv
import json
import os

import pytest
from PIL import Image
from sklearn.utils.estimator_checks import parametrize_with_checks

from skanomclust.cli import main
from skanomclust.datasets import make_synthetic_textures
from skanomclust.review import ReviewedClassifier, apply_review, paths_digest, read_review

TINY = ["--weights", "none", "--image-size", "48", "--param", "localizer__n_steps=20"]


def write_folder(root, n_normal=8, n_per_defect=4, seed=0):
    data = make_synthetic_textures(
        n_normal, n_per_defect, defect_types=("spot", "hole"), image_size=48, random_state=seed
    )
    for i, (image, target) in enumerate(zip(data.images, data.target, strict=True)):
        folder = root / data.target_names[target]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("review")
    images = write_folder(root / "images")
    status = main(["cluster", str(images), "-k", "3", "-o", str(root / "run"), "-q", *TINY])
    assert status == 0
    return root / "run"


def read_rows(path):
    with open(path, newline="", encoding="utf-8") as stream:
        return list(csv.DictReader(stream))


def write_review(path, images):
    paths = list(images)
    path.write_text(
        json.dumps(
            {
                "format": "skanomclust-review",
                "version": 1,
                "run": {"n_images": len(paths), "paths_sha1": paths_digest(paths)},
                "images": images,
            }
        )
    )
    return path


def class_review(run_folder, tmp_path):
    """A review that names every image by its class folder (a perfect reviewer)."""
    rows = read_rows(run_folder / "assignments.csv")
    names = {r["path"]: {"good": "no defect"}.get(r["class"], r["class"]) for r in rows}
    return write_review(tmp_path / "review.json", names), rows


@parametrize_with_checks([ReviewedClassifier(), ReviewedClassifier("logistic", random_state=0)])
def test_reviewed_classifier_is_an_estimator(estimator, check):
    check(estimator)


def test_apply_review_writes_dataset_labels_and_model(run_folder, tmp_path):
    review, rows = class_review(run_folder, tmp_path)
    summary = apply_review(run_folder, review, tmp_path / "out")
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "dataset").iterdir()) == ["hole", "no_defect", "spot"]
    assert summary["names"] == {"hole": 4, "no defect": 8, "spot": 4}
    for row in rows:
        folder = {"good": "no_defect"}.get(row["class"], row["class"])
        link = out / "dataset" / folder / os.path.basename(row["path"])
        assert link.is_symlink() and link.resolve().name == os.path.basename(row["path"])
    labels = read_rows(out / "labels.csv")
    assert [r["path"] for r in labels] == [r["path"] for r in rows]
    assert [r["cluster"] for r in labels] == [r["cluster"] for r in rows]
    assert json.loads((out / "review.json").read_text())["format"] == "skanomclust-review"


def test_reviewed_model_predicts_the_names(run_folder, tmp_path):
    review, rows = class_review(run_folder, tmp_path)
    apply_review(run_folder, review, tmp_path / "out", mode="copy")
    assert not any(p.is_symlink() for p in (tmp_path / "out" / "dataset").rglob("*.png"))
    new = write_folder(tmp_path / "new", n_normal=4, n_per_defect=2, seed=1)
    status = main(
        ["predict", str(tmp_path / "out" / "model.joblib"), str(new), "-o",
         str(tmp_path / "pred"), "-q", "--no-pixel-metrics"]
    )  # fmt: skip
    assert status == 0
    predicted = read_rows(tmp_path / "pred" / "assignments.csv")
    assert len(predicted) == 8
    assert {r["name"] for r in predicted} <= {"hole", "no defect", "spot"}
    names = ["hole", "no defect", "spot"]
    assert all(r["name"] == names[int(r["cluster"])] for r in predicted)
    assert "no defect" in (tmp_path / "pred" / "report.html").read_text()


def test_cli_apply_review(run_folder, tmp_path, capsys):
    review, _ = class_review(run_folder, tmp_path)
    out = tmp_path / "out"
    assert main(["apply-review", str(run_folder), str(review), "-o", str(out)]) == 0
    assert "3 names" in capsys.readouterr().err
    # a second time needs --overwrite, and leaves the first outputs as they were
    assert main(["apply-review", str(run_folder), str(review), "-o", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "labels.csv").is_file()
    assert main(["apply-review", str(run_folder), str(review), "-o", str(out), "--overwrite"]) == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "is not JSON"),
        ('{"format": "other"}', "is not a review"),
        ('{"format": "skanomclust-review", "images": {"a.png": ""}}', "map each path to a name"),
        ('{"format": "skanomclust-review", "images": {"a.png": "x"}}', "other images than this"),
    ],
)
def test_bad_reviews_are_named(run_folder, tmp_path, capsys, content, message):
    review = tmp_path / "review.json"
    review.write_text(content)
    status = main(["apply-review", str(run_folder), str(review), "-o", str(tmp_path / "out")])
    assert status == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_review_of_another_run_and_missing_files(run_folder, tmp_path):
    rows = read_rows(run_folder / "assignments.csv")
    names = {r["path"]: "a" if i % 2 else "b" for i, r in enumerate(rows)}
    review = write_review(tmp_path / "r.json", names)
    data = json.loads(review.read_text())
    data["run"]["paths_sha1"] = "0" * 40
    review.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="another run"):
        read_review(review, [r["path"] for r in rows])
    with pytest.raises(ValueError, match="has no assignments.csv"):
        apply_review(tmp_path, review, tmp_path / "out")
    with pytest.raises(ValueError, match="is a folder"):
        read_review(tmp_path, None)


def test_one_name_and_colliding_folder_names(run_folder, tmp_path):
    rows = read_rows(run_folder / "assignments.csv")
    one = write_review(tmp_path / "one.json", {r["path"]: "crack" for r in rows})
    with pytest.raises(ValueError, match="at least two names"):
        apply_review(run_folder, one, tmp_path / "out")
    clash = write_review(
        tmp_path / "clash.json", {r["path"]: "a b" if i % 2 else "a/b" for i, r in enumerate(rows)}
    )
    with pytest.raises(ValueError, match="same folder name"):
        apply_review(run_folder, clash, tmp_path / "out")
    assert not (tmp_path / "out").exists()
