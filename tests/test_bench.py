"""The benchmark runs end to end on the tiny model and prints its summary line (no timing is asserted)."""

from __future__ import annotations

import re

from bench import pipeline


def test_tiny_benchmark_prints_every_stage_and_the_summary_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "CACHE", tmp_path)
    assert pipeline.main(["--tiny", "--photos", "2", "--int8"]) == 0
    out = capsys.readouterr().out
    for stage in ("decode", "localize", "crop", "classify_and_explain", "render", "vision_forward",
                  "detect_twice", "classify_text_and_vision", "gradcam_full_backward", "dynamic int8", "bank embeddings"):
        assert stage in out, stage
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(r"full_over_forward=\d+\.\d{3} baseline_over_ours=\d+\.\d{2} rss_gb=\d+\.\d{2}", last), last
