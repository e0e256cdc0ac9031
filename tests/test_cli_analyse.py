"""``privascan analyze``: a batch of photos to CSV or JSON, on stdout or one named file, nothing else."""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
from pathlib import Path

import pytest

from tests.synthetic import make_lesion_photo
from webapp import cli
from webapp.commands.analyse import COLUMNS


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for seed in range(3):
        image, _ = make_lesion_photo(seed, width=800, height=600)  # big enough for the quality gate
        image.save(folder / f"photo-{seed}.jpg")
    (folder / "empty.png").write_bytes(b"")
    tiny = folder / "small"
    tiny.mkdir()
    make_lesion_photo(9, width=40, height=40)[0].save(tiny / "thumb.png")  # under the 64 px minimum
    return folder


@pytest.fixture
def environment(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("PRIVASCAN_PLUGINS", "")
    monkeypatch.setenv("PRIVASCAN_MODEL", tiny_model_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("PRIVASCAN_BANK_OVERRIDES", "PRIVASCAN_LESION_WEIGHTS", "PRIVASCAN_CLINICAL_APP"):
        monkeypatch.delenv(name, raising=False)


def direct_results(paths):
    """The pipeline run directly, with the registry the command builds, for comparison."""
    from webapp.commands.loading import load_runtime
    from webapp.images import safe_decode
    from webapp.pipeline import analyse_image, read

    runtime = load_runtime(argparse.Namespace(model=None, app=None, lesion_weights=None, template_set=None))
    runtime.load_models()
    results = {}
    for path in paths:
        image = safe_decode(Path(path).read_bytes(), 50_000_000).image
        result = analyse_image(image, runtime.clinical_app, runtime.registry, None, explain=False)
        results[str(path)] = (result, read(result, runtime.bank))
    return results


def test_csv_on_stdout(photos, environment, capsys):
    paths = [photos / f"photo-{seed}.jpg" for seed in range(3)]
    assert cli.main(["analyze", *map(str, paths), str(photos / "empty.png"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    rows = list(csv.reader(io.StringIO(captured.out)))
    assert rows[0] == COLUMNS
    records = [dict(zip(rows[0], row)) for row in rows[1:]]
    assert [r["path"] for r in records] == [*map(str, paths), str(photos / "empty.png")]
    expected = direct_results(paths)
    for record in records[:3]:
        result, reading = expected[record["path"]]
        assert record["status"] == "analysed"
        assert record["headline_id"] == reading.headline.id == record["top1"]
        assert record["headline"] == reading.headline.label
        assert (record["risk"], record["confidence"]) == (reading.risk, reading.confidence)
        top = [(record[f"top{i}"], float(record[f"top{i}_probability"])) for i in (1, 2, 3)]
        assert [c for c, _ in top] == [item.condition.id for item in reading.ranking[:3]]
        assert [p for _, p in top] == pytest.approx([item.probability for item in reading.ranking[:3]], abs=1e-6)
        assert top[0][1] >= top[1][1] >= top[2][1]
        box = [int(v) for v in record["lesion_box"].split()] if record["lesion_box"] else None
        assert box == (result.detection.box.as_list() if result.detection else None)
        if box:
            assert 0 <= box[0] < box[2] <= 800 and 0 <= box[1] < box[3] <= 600
    assert records[3]["status"] == "rejected" and records[3]["risk"] == "unknown"
    assert "empty" in records[3]["notes"]


def test_json_to_a_named_file_writes_only_that_file(photos, environment, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "results.json"
    assert cli.main(["analyze", str(photos), "--format", "json", "--output", str(output), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]
    records = json.loads(output.read_text())
    # The folder is searched for photos (sorted); the unreadable and the too-small one get a row too.
    assert [Path(r["path"]).name for r in records] == ["empty.png", "photo-0.jpg", "photo-1.jpg", "photo-2.jpg", "thumb.png"]
    by_name = {Path(r["path"]).name: r for r in records}
    assert by_name["thumb.png"]["status"] == "not analysed" and "at least 64 pixels" in by_name["thumb.png"]["notes"][0]
    good = by_name["photo-1.jpg"]
    assert good["analysed"] and len(good["top"]) == 3 and good["headline"]["id"] == good["top"][0]["id"]
    assert "heatmap" not in good and "reasoning" not in good


def test_explain_adds_reasoning_and_a_heatmap(photos, environment, capsys):
    assert cli.main(["analyze", str(photos / "photo-0.jpg"), "--format", "json", "--explain", "--quiet"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["heatmap_condition"] == record["top"][0]["id"]
    assert record["heatmap"].startswith("data:image/png;base64,")
    assert base64.b64decode(record["heatmap"].split(",", 1)[1]).startswith(b"\x89PNG")
    assert any("Ranked" in step for step in record["reasoning"])
    assert cli.main(["analyze", str(photos / "photo-0.jpg"), "--explain", "--quiet"]) == 0
    header = next(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert header[-3:] == ["reasoning", "heatmap_condition", "heatmap"]


def test_spreadsheet_formulas_in_file_names_are_defused(environment, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    make_lesion_photo(1, width=120, height=100)[0].save(tmp_path / "=HYPERLINK(1).jpg")
    assert cli.main(["analyze", "=HYPERLINK(1).jpg", "--quiet"]) == 0
    row = list(csv.reader(io.StringIO(capsys.readouterr().out)))[1]
    assert row[0] == "'=HYPERLINK(1).jpg"


def test_a_missing_path_is_an_error_before_anything_is_written(environment, tmp_path, capsys):
    output = tmp_path / "out.csv"
    assert cli.main(["analyze", str(tmp_path / "nope.jpg"), "--output", str(output)]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert not output.exists()


def test_gate_fields_and_analyse_anyway(photos, environment, tmp_path, capsys):
    from PIL import ImageFilter

    from tests.synthetic import make_lesion_photo

    blurred = tmp_path / "blurred.jpg"
    make_lesion_photo(4, width=800, height=600)[0].filter(ImageFilter.GaussianBlur(25)).save(blurred)
    assert cli.main(["analyze", str(blurred), str(photos / "photo-0.jpg"), "--format", "json", "--quiet"]) == 0
    refused, good = json.loads(capsys.readouterr().out)
    assert refused["tier"] == "cant_assess" and not refused["assessable"] and not refused["analysed"]
    sharpness = next(c for c in refused["quality"]["checks"] if c["name"] == "sharpness")
    assert not sharpness["passed"] and sharpness["hint"].startswith("Too blurred")
    assert good["quality"]["passed"] and good["tier"] != "cant_assess"
    assert good["scope"]["in_scope"] is None  # the tiny random model cannot judge scope
    assert good["skin_tone"]["band"] and good["calibrated"] is False
    assert cli.main(["analyze", str(blurred), "--format", "json", "--analyse-anyway", "--quiet"]) == 0
    (anyway,) = json.loads(capsys.readouterr().out)
    assert anyway["analysed"] and anyway["low_quality"] and not anyway["assessable"] and anyway["top"]
