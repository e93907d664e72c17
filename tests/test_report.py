"""Results tables in the paper's layout and the spread-aware verdicts (simgan/report.py)."""

from __future__ import annotations

import copy

import pytest

from simgan import report
from simgan.io import SimganError


def ms(mean, std):
    return {"mean": mean, "std": std}


def gaze_row(err, med, within):
    return {"mean_error_deg": ms(*err), "median_error_deg": ms(*med), "within7_pct": ms(*within)}


def full_gaze() -> dict:
    """Every row the pipeline writes for gaze, with numbers chosen so each verdict is known."""
    return {
        "rows": {
            "synthetic_1x": gaze_row((14.1, 2.0), (12.0, 1.5), (40.0, 3.0)),
            "synthetic_4x": gaze_row((13.5, 1.0), (11.0, 1.0), (42.0, 2.0)),
            "refined_1x": gaze_row((9.5, 0.8), (8.0, 0.5), (55.0, 2.0)),
            "refined_4x": gaze_row((8.0, 0.5), (7.0, 0.4), (60.0, 1.0)),
            "real_1x": gaze_row((2.5, 0.1), (2.0, 0.1), (98.0, 0.5)),
            "real_4x": gaze_row((2.0, 0.1), (1.8, 0.1), (99.0, 0.3)),
            "synthetic_aug_1x": gaze_row((12.0, 1.0), (10.0, 1.0), (45.0, 2.0)),
            "refined_aug_1x": gaze_row((9.0, 1.0), (7.5, 1.0), (57.0, 2.0)),
            "constant": gaze_row((10.0, 1.0), (9.0, 0.5), (30.0, 1.0)),  # within refined_1x's spread
            "knn_synthetic": gaze_row((11.0, 0.5), (10.0, 0.5), (35.0, 1.0)),
        },
        "label_preservation": {"pupil_shift_px": ms(1.0, 0.7)},
        "realism": {"refined_vs_real_acc_pct": 61.0, "synthetic_vs_real_acc_pct": 97.0},
        "gain": {"refined_vs_synthetic_1x_rel_pct": 25.0, "refined_vs_synthetic_4x_rel_pct": 30.0},
        "seeds": 3,
        "profile": "default",
    }


def full_hand() -> dict:
    rows = {
        f"{src}_{n}x": {"pck5_pct": ms(50.0 + 5 * n + off, 1.0)}
        for src, off in (("synthetic", 0.0), ("refined", 4.0), ("real", 10.0))
        for n in (1, 2, 3)
    }
    rows["constant"] = {"pck5_pct": ms(10.0, 0.0)}
    return {
        "rows": rows,
        "label_preservation": {"joint_depth_shift": ms(0.5, 0.2)},
        "realism": {"refined_vs_real_acc_pct": 70.0, "synthetic_vs_real_acc_pct": 90.0},
        "seeds": 3,
        "profile": "default",
    }


def body_rows(md: str) -> list[str]:
    """The body lines of the first markdown table in `md`."""
    lines = md.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|---"))
    out = []
    for line in lines[start + 1 :]:
        if not line.startswith("|"):
            break
        out.append(line)
    return out


def test_format_mean_std():
    assert report.format_mean_std(ms(7.8, 0.4)) == "7.8 ± 0.4"
    assert report.format_mean_std(ms(7.84, 0.456), digits=2) == "7.84 ± 0.46"
    assert report.format_mean_std({"mean": 7.8}) == "7.8"
    assert report.format_mean_std(3) == "3.0"
    assert report.format_mean_std(None) == "—"
    with pytest.raises(SimganError, match="mean"):
        report.format_mean_std({"avg": 1.0})


def test_paper_numbers_are_the_recalled_ones():
    p = report.PAPER
    assert p["gaze"]["mean_error_deg"] == {
        "real_1x": 13.9,
        "knn_synthetic": 9.9,
        "synthetic_1x": 11.2,
        "refined_1x": 7.8,
    }
    assert p["gaze"]["within7_pct"] == {
        "synthetic_1x": 62.3,
        "synthetic_4x": 64.9,
        "refined_1x": 69.4,
        "refined_4x": 87.2,
    }
    assert p["hand"]["pck5_pct"] == {
        "synthetic_1x": 69.7,
        "refined_1x": 72.4,
        "real_1x": 74.5,
        "synthetic_3x": 77.7,
        "refined_3x": 83.3,
    }
    assert p["gaze"]["no_history_buffer_mean_error_deg"] == 12.2
    assert p["label_preservation"]["pupil_shift_px"] == ms(1.1, 0.8)
    assert p["realism"] == {"refined_vs_real_acc_pct": 51.7, "synthetic_vs_real_acc_pct": 81.0}


def test_gaze_table_complete_in_paper_layout():
    md = report.gaze_table_md(full_gaze())
    rows = body_rows(md)
    assert len(rows) == 10
    assert md.splitlines()[0] == (
        "| Training data | Size | Mean error (deg) | Paper (recalled) | Median error (deg) "
        "| Within 7 deg (%) | Paper (recalled) |"
    )
    # The paper's order: synthetic, then refined, each at 1x then 4x; real after; baselines last.
    assert rows[0] == "| Synthetic | 1x | 14.1 ± 2.0 | 11.2 | 12.0 ± 1.5 | 40.0 ± 3.0 | 62.3 |"
    assert rows[1] == "| Synthetic | 4x | 13.5 ± 1.0 |  | 11.0 ± 1.0 | 42.0 ± 2.0 | 64.9 |"
    assert rows[2] == "| Refined | 1x | 9.5 ± 0.8 | 7.8 | 8.0 ± 0.5 | 55.0 ± 2.0 | 69.4 |"
    assert rows[3] == "| Refined | 4x | 8.0 ± 0.5 |  | 7.0 ± 0.4 | 60.0 ± 1.0 | 87.2 |"
    assert rows[4].startswith("| Real | 1x | 2.5 ± 0.1 | 13.9 ‡ |")
    assert all("Baseline" in r for r in rows[6:])
    assert "| Baseline: k-NN on synthetic | 1x | 11.0 ± 0.5 | 9.9 |" in md
    assert "| Baseline: constant predictor | — | 10.0 ± 1.0 |" in md
    assert "Over 3 seeds, profile `default`" in md
    assert "‡ The paper's real-data CNN was trained on UT Multiview" in md
    assert "12.2 deg" in md
    assert "| `refined_vs_synthetic_1x_rel_pct` | 25.0 | 30.4 (from Table 3) |" in md


def test_gaze_table_partial_shows_what_is_present():
    m = {
        "rows": {
            "refined_1x": {"mean_error_deg": ms(9.0, 1.0)},  # no median, no within7
            "synthetic_1x": gaze_row((12.0, 1.0), (11.0, 1.0), (40.0, 1.0)),
        },
        "seeds": 1,
    }
    rows = body_rows(report.gaze_table_md(m))
    assert rows == [
        "| Synthetic | 1x | 12.0 ± 1.0 | 11.2 | 11.0 ± 1.0 | 40.0 ± 1.0 | 62.3 |",
        "| Refined | 1x | 9.0 ± 1.0 | 7.8 | — | — | 69.4 |",
    ]
    assert "Over 1 seed." in report.gaze_table_md(m)
    assert report.gaze_table_md({}).startswith("_No gaze rows")


def test_unknown_rows_are_shown_not_dropped():
    m = full_gaze()
    m["rows"]["refined_nobuffer_1x"] = gaze_row((12.0, 1.0), (11.0, 1.0), (30.0, 1.0))
    rows = body_rows(report.gaze_table_md(m))
    assert rows[-1].startswith("| `refined_nobuffer_1x` | 1x | 12.0 ± 1.0 |")


def test_malformed_cell_names_the_key():
    m = full_gaze()
    m["rows"]["refined_4x"]["within7_pct"] = 60.0
    with pytest.raises(SimganError, match=r"rows\.refined_4x\.within7_pct"):
        report.gaze_table_md(m)


def test_hand_table_sizes_and_paper():
    rows = body_rows(report.hand_table_md(full_hand()))
    assert rows[:3] == [
        "| Synthetic | 1x | 55.0 ± 1.0 | 69.7 |",
        "| Synthetic | 2x | 60.0 ± 1.0 |  |",
        "| Synthetic | 3x | 65.0 ± 1.0 | 77.7 |",
    ]
    assert "| Refined | 3x | 69.0 ± 1.0 | 83.3 |" in rows
    assert "| Real | 1x | 65.0 ± 1.0 | 74.5 |" in rows
    assert rows[-1] == "| Baseline: constant predictor | — | 10.0 ± 0.0 |  |"
    partial = {"rows": {"refined_1x": {"pck5_pct": ms(60.0, 2.0)}}}
    assert body_rows(report.hand_table_md(partial)) == ["| Refined | 1x | 60.0 ± 2.0 | 72.4 |"]


def test_verdict_gaze_names_better_rows_and_ties():
    text = report.verdict_md(full_gaze(), "gaze")
    # refined_1x 9.5 ± 0.8 vs constant 10.0 ± 1.0: 0.5 <= 1.0, so no result.
    assert (
        "Refined (1x) vs the constant predictor: no measurable difference in mean error "
        "(9.5 ± 0.8 deg vs 10.0 ± 1.0 deg; the difference 0.5 is within the spread 1.0)."
    ) in text
    assert (
        "Refined (1x) beats synthetic (1x) on mean error: 9.5 ± 0.8 deg vs 14.1 ± 2.0 deg "
        "(4.6 deg lower, 33% relative; spread 2.0)."
    ) in text
    assert "Refined (1x) does not beat real (1x)" in text
    assert "Refined training beats k-NN on synthetic, synthetic (1x), synthetic (4x)" in text
    assert "It does not beat real (1x), real (4x)." in text
    assert "No measurable difference from the constant predictor." in text
    assert "synthetic 1x → 4x: no measurable difference; refined 1x → 4x improves by 1.5 deg" in text


def test_verdict_summary_names_the_augmented_comparison_row_once():
    m = full_gaze()
    m["rows"]["synthetic_aug_1x"] = {"mean_error_deg": ms(9.6, 1.0)}
    m["rows"]["refined_aug_1x"] = {"mean_error_deg": ms(9.4, 0.5)}
    summary = report.verdict_md(m, "gaze").split("\n")[0]
    # refined (9.5) and refined + aug (9.4) both tie with synthetic + aug (9.6 ± 1.0)
    assert "synthetic + augmentation (1x) (refined with or without augmentation)" in summary
    assert summary.count("synthetic + augmentation (1x)") == 1
    m["rows"]["refined_aug_1x"] = {"mean_error_deg": ms(7.0, 0.5)}  # now only the augmented pair wins
    summary = report.verdict_md(m, "gaze").split("\n")[0]
    assert (
        "beats k-NN on synthetic, synthetic (1x), synthetic (4x), synthetic + augmentation (1x) (refined + augmentation)."
        in summary
    )


def test_verdict_flips_when_difference_exceeds_spread():
    m = full_gaze()
    m["rows"]["synthetic_1x"]["mean_error_deg"] = ms(9.9, 0.3)  # 0.4 apart, spread 0.8: no result
    assert "Refined (1x) vs synthetic (1x): no measurable difference" in report.verdict_md(m, "gaze")
    m["rows"]["synthetic_1x"]["mean_error_deg"] = ms(9.0, 0.3)  # 0.5 better, spread 0.8: still none
    assert "Refined (1x) vs synthetic (1x): no measurable difference" in report.verdict_md(m, "gaze")
    m["rows"]["synthetic_1x"]["mean_error_deg"] = ms(8.0, 0.3)  # 1.5 better than refined: synthetic wins
    assert "Refined (1x) does not beat synthetic (1x) on mean error" in report.verdict_md(m, "gaze")


def test_verdict_hand_higher_is_better_and_absences():
    text = report.verdict_md(full_hand(), "hand")
    assert (
        "Refined (3x) beats synthetic (3x) on joints within 5 px: 69.0 ± 1.0% vs 65.0 ± 1.0% (4.0 points higher" in text
    )
    assert "Refined (1x) does not beat real (1x)" in text
    assert report.verdict_md({"rows": {"synthetic_1x": {"pck5_pct": ms(1, 0)}}}, "hand").startswith("_No refined row")
    with pytest.raises(SimganError, match="unknown task"):
        report.verdict_md(full_hand(), "pose")


def test_realism_note_when_the_classifier_cannot_tell_synthetic_from_real():
    hand = full_hand()
    assert "learned nothing" not in report.realism_table_md({"hand": hand})
    hand["realism"] = {"refined_vs_real_acc_pct": 50.0, "synthetic_vs_real_acc_pct": 50.0}
    md = report.realism_table_md({"gaze": full_gaze(), "hand": hand})
    assert "**The hand classifier learned nothing:**" in md and "evaluate.hand.realism_steps" in md
    assert "gaze classifier learned nothing" not in md


def test_realism_and_label_preservation_tables():
    both = {"gaze": full_gaze(), "hand": full_hand()}
    realism = report.realism_table_md(both)
    assert "| gaze | refined vs real | 61.0 | 11.0 | 51.7 (humans) |" in realism
    assert "| hand | synthetic vs real | 90.0 | 40.0 |  |" in realism
    lp = report.label_preservation_md(both)
    assert "| gaze | pupil centre shift (px) | 1.0 ± 0.7 | 1.1 ± 0.8 |" in lp
    assert "| hand | joint depth shift | 0.50 ± 0.20 |  |" in lp  # below 1: two decimals (0.07 read 0.1)
    assert report.realism_table_md({"gaze": {"rows": {}}}) == "_No realism metrics._"
    assert "rechecked" not in realism
    both["hand"]["realism"].update(
        restarts=3,
        recheck_below_pct=90.0,
        refined_vs_real_pose_matched_acc_pct=98.0,
        synthetic_vs_real_pose_matched_acc_pct=99.0,
    )
    realism = report.realism_table_md(both)
    assert "An accuracy under 90% was rechecked by up to 2 more classifiers from other seeds" in realism
    assert "| hand | refined vs real, pose-matched | 98.0 | 48.0 |  |" in realism


def test_report_md_assembles_present_tasks():
    md = report.report_md({"gaze": full_gaze(), "hand": full_hand()})
    order = [
        "# Results",
        "## Gaze estimation",
        "**Verdict (gaze).**",
        "## Hand pose estimation",
        "**Verdict (hand).**",
        "## Realism",
        "## Label preservation",
    ]
    positions = [md.index(h) for h in order]
    assert positions == sorted(positions)
    only_gaze = report.report_md({"gaze": full_gaze(), "hand": None}, level=3)
    assert only_gaze.startswith("### Results\n") and "Hand pose" not in only_gaze
    assert "_No metrics._" in report.report_md({})


def test_report_does_not_mutate_input():
    m = full_gaze()
    before = copy.deepcopy(m)
    report.report_md({"gaze": m})
    assert m == before


def with_replicates(m: dict, values: dict[str, list[float]], primary: str) -> dict:
    """m with per-replicate values (seeds 0, 1, 2) on the primary metric of the rows named."""
    m = copy.deepcopy(m)
    for row, vs in values.items():
        mean = sum(vs) / len(vs)
        std = (sum((v - mean) ** 2 for v in vs) / (len(vs) - 1)) ** 0.5 if len(vs) > 1 else 0.0
        m["rows"][row][primary] = {"mean": mean, "std": std, "values": vs}
    m["replicate_seeds"] = list(range(len(next(iter(values.values())))))
    return m


def replicated_gaze() -> dict:
    m = with_replicates(
        full_gaze(),
        {
            "synthetic_1x": [14.0, 14.5, 13.8],
            "refined_1x": [9.5, 9.9, 9.2],  # 4.5, 4.6, 4.6 better than synthetic: beats
            "constant": [10.0, 10.0, 10.0],  # 0.5, 0.1, 0.8 better: mean 0.47 > 2 SE (0.40): beats
            "real_1x": [2.5, 2.6, 2.4],
            "synthetic_4x": [13.0, 14.5, 13.0],
            "refined_4x": [12.0, 15.0, 12.5],  # 1.0, -0.5, 0.5: mixed signs, no difference
        },
        "mean_error_deg",
    )
    for row in ("synthetic_aug_1x", "refined_aug_1x", "knn_synthetic", "real_4x"):
        del m["rows"][row]
    m["realism"]["replicates"] = {
        "refined_vs_real_acc_pct": {"std": 2.5, "values": [59.0, 60.0, 64.0]},
        "synthetic_vs_real_acc_pct": {"std": 1.0, "values": [96.0, 97.0, 98.0]},
    }
    m["label_preservation"]["replicates"] = {"pupil_shift_px": {"std": 0.2, "values": [0.8, 1.0, 1.2]}}
    return m


def test_verdicts_pair_per_replicate_when_the_rows_have_values():
    text = report.verdict_md(replicated_gaze(), "gaze")
    assert (
        "Refined (1x) beats synthetic (1x) on mean error: 9.5 ± 0.4 deg vs 14.1 ± 0.4 deg; mean paired "
        "improvement 4.57 deg ± 0.03 (SE), 3 of 3 replicates agree (paired rule: beats)."
    ) in text
    # the unpaired rule called this a tie (0.5 within refined's spread); paired, every replicate wins
    assert "Refined (1x) beats the constant predictor on mean error" in text
    assert (
        "Refined (4x) vs synthetic (4x): no difference beyond the spread in mean error (13.2 ± 1.6 deg vs "
        "13.5 ± 0.9 deg; mean paired improvement 0.33 deg ± 0.44 (SE), 2 of 3 replicates agree)."
    ) in text
    assert "Refined (1x) does not beat real (1x) on mean error" in text and "(paired rule: worse)" in text
    # more data, replicate by replicate: refined 4x is 2.5, 5.1 and 3.3 deg worse than refined 1x
    assert (
        "refined 1x → 4x: gets worse (mean paired improvement -3.63 deg ± 0.77 (SE), 3 of 3 replicates agree)"
    ) in text


def test_the_metrics_paired_block_is_the_verdict_when_present():
    m = replicated_gaze()
    m["paired"] = {
        "refined_vs_synthetic_1x": {
            "a": "refined_1x",
            "b": "synthetic_1x",
            "metric": "mean_error_deg",
            "values": [4.5, 4.6, 4.6],
            "mean": 4.57,
            "std": 0.06,
            "se": 0.03,
            "n": 3,
            "agree": 3,
            "verdict": "no difference",  # not what the numbers say: the block is what is read
        }
    }
    assert "Refined (1x) vs synthetic (1x): no difference beyond the spread" in report.verdict_md(m, "gaze")
    m["paired"]["refined_vs_synthetic_1x"]["verdict"] = "maybe"
    with pytest.raises(SimganError, match=r"paired\.refined_vs_synthetic_1x"):
        report.verdict_md(m, "gaze")


def test_one_replicate_gives_no_paired_verdict():
    m = with_replicates(full_hand(), {"synthetic_1x": [55.0], "refined_1x": [59.0]}, "pck5_pct")
    m["rows"] = {k: m["rows"][k] for k in ("synthetic_1x", "refined_1x")}
    text = report.verdict_md(m, "hand")
    assert "Refined (1x) vs synthetic (1x): no verdict on joints within 5 px from one replicate" in text
    assert "No verdict from one replicate against synthetic (1x)." in text


def test_paired_differences_table_and_replicate_header():
    m = replicated_gaze()
    table = report.paired_table_md(m, "gaze")
    assert "Rule: per replicate, the improvement of one row over the other" in table
    rows = body_rows(table)
    assert rows[0] == "| refined (1x) vs synthetic (1x) | 4.50, 4.60, 4.60 | 4.57 ± 0.06 | 0.03 | 3 of 3 | beats |"
    assert (
        "| refined (4x) vs synthetic (4x) | 1.00, -0.50, 0.50 | 0.33 ± 0.76 | 0.44 | 2 of 3 | no difference |" in rows
    )
    assert report.paired_table_md(full_gaze(), "gaze") == ""  # older metrics: no per-replicate values
    md = report.report_md({"gaze": m})
    assert "## Paired differences (per replicate, gaze)" in md
    assert (
        "Over 3 whole-pipeline replicates (seeds 0, 1, 2; each its own GAN, refined set and estimator, so ± is "
        "the spread over replicates, not over estimator seeds only)"
    ) in md
    assert "## Paired differences" not in report.report_md({"gaze": full_gaze()})


def test_realism_and_label_preservation_show_the_spread_over_replicates():
    m = replicated_gaze()
    realism = report.realism_table_md({"gaze": m})
    assert "| gaze | refined vs real | 61.0 ± 2.5 | 11.0 | 51.7 (humans) |" in realism
    assert "mean ± std over 3 whole-pipeline replicates" in realism
    lp = report.label_preservation_md({"gaze": m})
    assert lp.splitlines()[0].endswith("| Over 3 replicates (mean ± std) |")
    assert "| gaze | pupil centre shift (px) | 1.0 ± 0.7 | 1.1 ± 0.8 | 1.00 ± 0.20 |" in lp
