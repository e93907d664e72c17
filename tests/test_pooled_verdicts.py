"""benchmarks.pooled_verdicts: the replicates of two runs judged together by the report's rule."""

import json

import pytest

from benchmarks.pooled_verdicts import main, pool


def _metrics(path, values):
    n = len(values)
    mean = sum(values) / n
    se = (sum((v - mean) ** 2 for v in values) / (n - 1) / n) ** 0.5
    paired = {
        "refined_vs_synthetic_1x": {"values": values, "mean": mean, "se": se, "n": n, "verdict": "?", "metric": "m"}
    }
    path.write_text(json.dumps({"paired": paired}))
    return str(path)


def test_pooled_replicates_get_the_reports_verdict_and_a_run_that_disagrees_is_flagged(tmp_path, capsys):
    a = _metrics(tmp_path / "a.json", [1.0, 1.2, 0.8])
    b = _metrics(tmp_path / "b.json", [1.1, 0.9, 1.0])
    far = _metrics(tmp_path / "far.json", [-0.1, 0.1, 0.0])
    together = pool([a, b])["refined_vs_synthetic_1x"]
    assert together["n"] == 6 and together["verdict"] == "beats" and together["agree"] == 6
    assert together["mean"] == pytest.approx(1.0) and not together["runs"][1]["disagrees"]
    apart = pool([a, far])["refined_vs_synthetic_1x"]
    assert apart["verdict"] == "no difference" and apart["runs"][1]["disagrees"]
    assert apart["runs"][1]["minus_first"] == pytest.approx(-1.0)
    out = tmp_path / "pooled.json"
    main([a, far, "--out", str(out)])
    assert "disagrees" in capsys.readouterr().out
    assert json.loads(out.read_text())["pooled"]["refined_vs_synthetic_1x"]["n"] == 6


def test_a_file_without_paired_results_is_named(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(SystemExit, match="bad.json: expected a metrics/<task>.json with a 'paired' section"):
        pool([str(bad), str(bad)])
