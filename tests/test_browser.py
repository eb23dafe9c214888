"""The review page in a real browser: rename, merge, move, download, apply-review.

Drives Debian's chromium (``/usr/bin/chromium``) through Playwright; skipped where
either is missing (browser downloads are not possible on the machines this runs on).
"""

import json
import shutil
from pathlib import Path

import pytest
from test_review import TINY, read_rows, write_folder

from skanomclust.cli import main

playwright = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine")


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("browser")
    images = write_folder(root / "images")
    assert main(["cluster", str(images), "-k", "3", "-o", str(root / "run"), "-q", *TINY]) == 0
    return root / "run"


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def open_report(browser, run_folder):
    page = browser.new_page(accept_downloads=True)
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto((run_folder / "report.html").as_uri())
    page.wait_for_selector("body[data-ready=true]", timeout=30_000)
    return page, errors


def groups(page):
    return page.eval_on_selector_all("#clusters .cluster", "els => els.map(e => e.dataset.group)")


def select(page, i):
    page.click(f"#img-{i} input.select")


def download(page, button):
    with page.expect_download() as info:
        page.click(button)
    return json.loads(Path(info.value.path()).read_text(encoding="utf-8"))


def test_review_in_the_browser_and_apply_it(browser, run_folder, tmp_path):
    rows = read_rows(run_folder / "assignments.csv")
    cluster = [r["cluster"] for r in rows]
    page, errors = open_report(browser, run_folder)
    assert groups(page) == ["0", "1", "2"]

    page.fill('.cluster[data-group="0"] .cluster-name', "crack")
    page.press('.cluster[data-group="0"] .cluster-name', "Enter")
    page.select_option('.cluster[data-group="2"] .merge-into', "1")
    assert groups(page) == ["0", "1"]

    moved = next(i for i, c in enumerate(cluster) if c == "0")
    select(page, moved)
    page.click("#move-button")
    page.click('#move-menu button[data-to="1"]')
    page.click(f"#img-{moved} .pic")  # enlarged, a moved image says where it came from
    assert "moved by you from crack" in page.text_content("#lightbox-meta")
    assert "% sure" not in page.text_content("#lightbox-meta")
    page.keyboard.press("Escape")
    no_defect = next(i for i, c in enumerate(cluster) if c in ("1", "2"))
    select(page, no_defect)
    page.keyboard.press("n")  # the key for "no defect"
    undone = next(i for i, c in enumerate(cluster) if c == "1" and i != no_defect)
    select(page, undone)
    page.click("#no-defect-button")
    page.click("#undo-button")  # takes back the last "no defect" only

    review = download(page, "#download-review")
    assert errors == []
    images = review["images"]
    assert review["format"] == "skanomclust-review" and len(images) == len(rows)
    expected = {}
    for row in rows:
        name = {"0": "crack", "1": "cluster 1", "2": "cluster 1"}[row["cluster"]]
        expected[row["path"]] = name
    expected[rows[moved]["path"]] = "cluster 1"
    expected[rows[no_defect]["path"]] = "no defect"
    assert images == expected
    assert [a["type"] for a in review["actions"]][:2] == ["rename", "merge"]

    # the decisions survive a reload (kept in the browser's storage)
    page.reload()
    page.wait_for_selector("body[data-ready=true]")
    assert download(page, "#download-review")["images"] == expected
    page.close()

    path = tmp_path / "review.json"
    path.write_text(json.dumps(review))
    assert main(["apply-review", str(run_folder), str(path), "-o", str(tmp_path / "out")]) == 0
    dataset = tmp_path / "out" / "dataset"
    assert sorted(p.name for p in dataset.iterdir()) == ["cluster_1", "crack", "no_defect"]
    counts = {p.name: len(list(p.iterdir())) for p in dataset.iterdir()}
    assert counts == {
        "crack": list(expected.values()).count("crack"),
        "cluster_1": list(expected.values()).count("cluster 1"),
        "no_defect": 1,
    }


def test_labels_csv_download(browser, run_folder):
    page, errors = open_report(browser, run_folder)
    with page.expect_download() as info:
        page.click("#download-labels")
    lines = Path(info.value.path()).read_text(encoding="utf-8").splitlines()
    page.close()
    assert errors == []
    rows = read_rows(run_folder / "assignments.csv")
    assert lines[0] == "path,name" and len(lines) == len(rows) + 1
    assert lines[1] == f"{rows[0]['path']},cluster {rows[0]['cluster']}"
