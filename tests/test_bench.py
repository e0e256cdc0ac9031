"""The benchmark runs end to end on the tiny model and prints its summary line (no timing is asserted)."""

from __future__ import annotations

import re

from bench import pipeline


def test_tiny_benchmark_prints_every_stage_and_the_summary_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "CACHE", tmp_path)
    assert pipeline.main(["--tiny", "--photos", "2", "--int8"]) == 0
    out = capsys.readouterr().out
    for stage in ("decode", "localize", "crop", "classify_and_explain", "render", "vision_forward",
                  "detect_twice", "classify_text_and_vision", "gradcam_full_backward", "dynamic int8", "bank embeddings",
                  "cold start (empty cache)", "warm start", "warm int8 start", "heatmap correlation", "top-1 agreement",
                  "batching 2 queued crops"):
        assert stage in out, stage
    last = out.strip().splitlines()[-1]
    assert re.fullmatch(
        r"full_over_forward=\d+\.\d{3} baseline_over_ours=\d+\.\d{2} rss_gb=\d+\.\d{2} "
        r"int8_full_over_int8_forward=\d+\.\d{3} int8_forward_over_fp32=\d+\.\d{3} int8_rss_gb=\d+\.\d{2} "
        r"warm_start_over_cold=\d+\.\d{3}",
        last,
    ), last
    # The warm start really came from the cache the cold one filled, in another process.
    assert "text tower skipped" in out
