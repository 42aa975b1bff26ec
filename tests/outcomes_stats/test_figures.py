"""Figures are real PNG / SVG bytes with the at-risk table and legend content."""

import re

import pytest
from lifelines.datasets import load_lung

from outcomes.figures import SwimmerLane, km_figure, swimmer_figure
from outcomes.survival import kaplan_meier_by_group, number_at_risk


@pytest.fixture(scope="module")
def curves():
    return kaplan_meier_by_group(load_lung(), "time", "status", "sex")


def test_km_png(curves):
    png = km_figure(curves, risk_times=[0, 250, 500, 750, 1000])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 10_000


def test_km_svg_has_at_risk_table_and_method(curves):
    times = [0, 250, 500, 750, 1000]
    svg = km_figure(curves, risk_times=times, fmt="svg", title="OS by sex").decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    texts = re.findall(r">([^<>]+)</text>", svg)
    assert "Number at risk" in texts
    for label, km in curves.items():
        counts = [str(c) for c in number_at_risk(km, times)]
        assert all(c in texts for c in counts), (label, counts)
    assert any("log method" in t for t in texts)
    assert "OS by sex" in texts


def test_swimmer_png_and_svg():
    lanes = [
        SwimmerLane("P01", 26.0, [(3.0, "PR"), (6.1, "CR"), (18.2, "recurrence")], alive=True, group="P/D + IMRT"),
        SwimmerLane("P02", 11.5, [(2.9, "SD"), (8.0, "PD"), (11.5, "death")], alive=False, group="IMRT alone"),
        SwimmerLane("P03", 30.0, [(3.2, "CR")], alive=True, group="P/D + IMRT"),
    ]
    png = swimmer_figure(lanes)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    svg = swimmer_figure(lanes, fmt="svg").decode()
    texts = re.findall(r">([^<>]+)</text>", svg)
    for want in ("P01", "P02", "P03", "CR", "PD", "Recurrence", "Death", "Alive (censored)", "IMRT alone"):
        assert want in texts, want
    with pytest.raises(ValueError):
        swimmer_figure([SwimmerLane("P9", 3.0, [(1.0, "XX")])])
    with pytest.raises(ValueError):
        km_figure({}, fmt="png")


def test_forest_plot_writes_each_hazard_ratio_of_r_coxph():
    """R ``coxph(Surv(time, status) ~ sex + age, data = lung)``: HR sex 0.5986 (0.4311-0.8311), age 1.0172
    (0.9990-1.0357); the forest plot labels each term and prints its HR and CI as text (SVG keeps text)."""
    from outcomes.figures import ForestRow, forest_figure
    from outcomes.survival import cox_ph

    res = cox_ph(load_lung(), "time", "status", ["sex", "age"])
    rows = [ForestRow(t.covariate, t.hazard_ratio, t.hr_lower, t.hr_upper, t.p_value) for t in res.terms]
    svg = forest_figure(rows, fmt="svg", title="OS").decode()
    texts = re.findall(r">([^<>]+)</text>", svg)
    assert "sex" in texts and "age" in texts and "OS" in texts
    assert "0.60 (0.43–0.83), p = 0.002" in texts
    assert "1.02 (1.00–1.04), p = 0.065" in texts
    assert forest_figure(rows)[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="no finite ratio"):
        forest_figure([ForestRow("x", float("inf"), 1.0, float("inf"))])
    # the ratio axis (0.43 / 1.25 to 1.036 * 1.25) is labelled in plain numbers, not 10^0 or 5 x 10^-1
    assert [t for t in texts if re.fullmatch(r"[0-9.]+", t)] == ["0.4", "0.5", "0.7", "1"]


def test_forest_ratio_axis_ticks():
    from outcomes.figures import _ratio_ticks

    assert _ratio_ticks(0.08, 5.8) == [0.1, 0.2, 0.5, 1, 2, 5]
    assert _ratio_ticks(0.8, 5.8) == [1, 2, 5]
    assert _ratio_ticks(0.8, 1.34) == [0.8, 0.9, 1, 1.1, 1.2, 1.3]   # a narrow model: finer steps
    assert _ratio_ticks(0.001, 300) == [0.001, 0.01, 0.1, 1, 10, 100]  # a wide one: decades only
