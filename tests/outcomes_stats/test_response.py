"""RECIST 1.1 / mRECIST response rules (Eisenhauer et al., Eur J Cancer 2009;45:228-247; Byrne & Nowak,
Ann Oncol 2004; Armato & Nowak, J Thorac Oncol 2018). Each test states the rule it checks."""

import datetime as dt

import pytest

from outcomes.response import (
    CR,
    MRECIST,
    NE,
    NT_ABSENT,
    NT_NOT_EVALUATED,
    NT_PRESENT,
    NT_PROGRESSION,
    PD,
    PR,
    SD,
    STATUS_CR,
    STATUS_PD,
    STATUS_RECURRENCE,
    Assessment,
    Override,
    PleuralMeasurement,
    ResponseValidationError,
    TargetLesion,
    evaluate_course,
    mcode_disease_status,
    validate_baseline,
)

D0 = dt.date(2025, 1, 6)


def day(n):
    return D0 + dt.timedelta(days=n)


def lesions(**sizes):
    """lesions(liver1=30, node1=('node', 20)) -> TargetLesion tuple."""
    out = []
    for lid, v in sizes.items():
        if isinstance(v, tuple):
            out.append(TargetLesion(lid, "lymph node", True, v[1]))
        else:
            out.append(TargetLesion(lid, lid.rstrip("0123456789"), False, v))
    return tuple(out)


def base(**sizes):
    return Assessment(D0, lesions(**sizes), non_target=NT_ABSENT)


def fu(n, nt=NT_ABSENT, new=False, override=None, **sizes):
    return Assessment(day(n), lesions(**sizes), non_target=nt, new_lesions=new, override=override)


def test_baseline_measurability_errors_are_all_listed():
    bad = Assessment(
        D0,
        (
            TargetLesion("n1", "lymph node", True, 12),  # node < 15 mm short axis
            TargetLesion("l1", "liver", False, 8),  # non-nodal < 10 mm
            TargetLesion("l2", "liver", False, 20),
            TargetLesion("l3", "liver", False, 25),  # 3rd liver target
            TargetLesion("p1", "lung", False, 15),
            TargetLesion("b1", "bone", False, 30),  # 6th target
        ),
    )
    with pytest.raises(ResponseValidationError) as exc:
        validate_baseline(bad)
    text = " | ".join(exc.value.problems)
    assert "n1" in text and "15 mm" in text
    assert "l1" in text and "10 mm" in text
    assert "6 target lesions" in text
    assert "organ 'liver'" in text
    assert len(exc.value.problems) == 4


def test_measurable_limits_are_inclusive():
    validate_baseline(Assessment(D0, (TargetLesion("n", "ln", True, 15), TargetLesion("l", "liver", False, 10))))


def test_pr_is_30_percent_below_baseline():
    # baseline sum 100 mm: 70 mm is a 30 % decrease (PR), 71 mm is not (SD)
    r = evaluate_course(base(liver1=60, lung1=40), [fu(56, liver1=40, lung1=30)])
    assert r.assessments[0].response == PR
    r = evaluate_course(base(liver1=60, lung1=40), [fu(56, liver1=41, lung1=30)])
    assert r.assessments[0].response == SD


def test_pd_is_measured_from_nadir_not_baseline():
    # baseline 100 -> 60 (PR, nadir 60) -> 72 = +20 % and +12 mm over nadir: PD though < baseline
    r = evaluate_course(base(liver1=100), [fu(56, liver1=60), fu(112, liver1=72)])
    assert [a.response for a in r.assessments] == [PR, PD]
    assert r.assessments[1].nadir_mm == 60
    assert r.assessments[1].change_from_nadir_pct == pytest.approx(20.0)
    assert r.first_progression_date == day(112)
    assert r.best_overall_response == PR


def test_pd_needs_5_mm_absolute_increase():
    # nadir 20 mm: 24 mm is +20 % but only +4 mm -> SD; 25 mm is +25 % and +5 mm -> PD
    r = evaluate_course(base(lung1=10, lung2=10), [fu(56, lung1=12, lung2=12)])
    assert r.assessments[0].response == SD
    r = evaluate_course(base(lung1=10, lung2=10), [fu(56, lung1=13, lung2=12)])
    assert r.assessments[0].response == PD


def test_cr_allows_nodes_below_10mm_and_needs_non_targets_absent():
    b = Assessment(D0, lesions(liver1=15, node1=("node", 20)), non_target=NT_PRESENT)
    cr_meas = dict(liver1=0, node1=("node", 8))
    r = evaluate_course(b, [Assessment(day(60), lesions(**cr_meas), non_target=NT_ABSENT)])
    a = r.assessments[0]
    assert a.target_sum_mm == 8  # sum is not zero, still CR (RECIST 1.1 nodes < 10 mm)
    assert (a.target_response, a.response, a.status) == (CR, CR, STATUS_CR)
    # target CR with non-target disease still present -> overall PR (Table 1)
    r = evaluate_course(b, [Assessment(day(60), lesions(**cr_meas), non_target=NT_PRESENT)])
    assert (r.assessments[0].target_response, r.assessments[0].response) == (CR, PR)
    # node at 10 mm is not normal -> no CR
    r = evaluate_course(b, [Assessment(day(60), lesions(liver1=0, node1=("node", 10)), non_target=NT_ABSENT)])
    assert r.assessments[0].target_response != CR


def test_new_lesion_or_unequivocal_non_target_progression_is_pd():
    r = evaluate_course(base(liver1=50), [fu(56, new=True, liver1=20)])
    assert (r.assessments[0].target_response, r.assessments[0].response) == (PR, PD)
    r = evaluate_course(base(liver1=50), [fu(56, nt=NT_PROGRESSION, liver1=50)])
    assert r.assessments[0].response == PD


def test_missing_measurement_is_ne_unless_already_pd():
    b = base(liver1=30, lung1=20)
    r = evaluate_course(b, [fu(56, liver1=25, lung1=None)])
    assert (r.assessments[0].target_sum_mm, r.assessments[0].response) == (None, NE)
    # measured lesion alone is 70 mm vs nadir 50 mm (+40 %, +20 mm): PD can be declared
    r = evaluate_course(b, [fu(56, liver1=70, lung1=None)])
    assert r.assessments[0].response == PD
    # non-target not evaluated does not spoil a target PR
    r = evaluate_course(b, [fu(56, nt=NT_NOT_EVALUATED, liver1=10, lung1=10)])
    assert r.assessments[0].response == PR


def test_recurrence_after_complete_remission():
    r = evaluate_course(
        base(liver1=30),
        [fu(60, liver1=0), fu(150, liver1=0), fu(240, new=True, liver1=0), fu(330, new=True, liver1=12)],
    )
    assert [a.status for a in r.assessments] == [STATUS_CR, STATUS_CR, STATUS_RECURRENCE, STATUS_PD]
    assert r.first_complete_remission_date == day(60)
    assert r.recurrence_date == day(240)
    assert r.first_progression_date == day(240)
    assert r.best_overall_response == CR
    # reappearance of the target lesion itself after CR is also recurrence
    r = evaluate_course(base(liver1=30), [fu(60, liver1=0), fu(150, liver1=4)])
    assert r.assessments[1].response == PD and r.assessments[1].status == STATUS_RECURRENCE


def test_best_overall_response_minimum_sd_duration():
    # SD at day 28 (< 42 days) then PD -> BOR PD; SD at day 49 -> BOR SD
    r = evaluate_course(base(liver1=50), [fu(28, liver1=48), fu(84, liver1=70)])
    assert r.best_overall_response == PD
    r = evaluate_course(base(liver1=50), [fu(49, liver1=48), fu(84, liver1=70)])
    assert (r.best_overall_response, r.best_overall_response_date) == (SD, day(49))
    # early SD only, no PD -> NE
    r = evaluate_course(base(liver1=50), [fu(28, liver1=48)])
    assert r.best_overall_response == NE
    # SD duration counted from treatment start when given: day 49 after baseline but only 35 after RT start
    r = evaluate_course(base(liver1=50), [fu(49, liver1=48)], treatment_start=day(14))
    assert r.best_overall_response == NE
    # a configurable minimum (e.g. 8 weeks)
    r = evaluate_course(base(liver1=50), [fu(49, liver1=48)], min_sd_days=56)
    assert r.best_overall_response == NE


def test_best_response_ignores_assessments_after_progression():
    r = evaluate_course(base(liver1=50), [fu(56, liver1=48), fu(112, new=True, liver1=48), fu(168, liver1=0)])
    assert r.best_overall_response == SD


def test_confirmation_option():
    course = [fu(56, liver1=30), fu(70, liver1=30), fu(120, liver1=45)]
    assert evaluate_course(base(liver1=50), course).best_overall_response == PR
    # PR at day 56 only repeated 14 days later: unconfirmed with a 28-day rule -> SD
    assert evaluate_course(base(liver1=50), course, require_confirmation=True).best_overall_response == SD
    course = [fu(56, liver1=30), fu(90, liver1=30)]
    assert evaluate_course(base(liver1=50), course, require_confirmation=True).best_overall_response == PR


def test_clinician_override_replaces_derived_but_both_are_kept():
    ov = Override(PD, "clinical progression: rising pleural effusion, cytology positive")
    r = evaluate_course(base(liver1=50), [fu(56, liver1=48, override=ov)])
    a = r.assessments[0]
    assert (a.derived_response, a.override_response, a.response) == (SD, PD, PD)
    assert a.override_reason.startswith("clinical progression")
    assert a.status == STATUS_PD
    assert r.first_progression_date == day(56)
    with pytest.raises(ValueError):
        Override(PD, "  ")


def test_correcting_an_earlier_assessment_changes_later_results():
    later = fu(112, liver1=72)
    r1 = evaluate_course(base(liver1=100), [fu(56, liver1=60), later])
    assert r1.assessments[1].response == PD  # nadir 60
    # radiologist corrects day-56 measurement to 65 mm: nadir 65, 72 is +10.8 % -> SD
    r2 = evaluate_course(base(liver1=100), [later, fu(56, liver1=65)])  # any input order
    assert [a.date for a in r2.assessments] == [day(56), day(112)]
    assert r2.assessments[1].nadir_mm == 65
    assert r2.assessments[1].response == SD
    assert r2.first_progression_date is None


def pleural(**vals):
    # key "L1a" -> level 1, site a
    return tuple(PleuralMeasurement(k[2:], int(k[1]), v) for k, v in vals.items())


def test_mrecist_pleural_sum_thresholds():
    b = Assessment(D0, pleural=pleural(L1a=15, L1b=12, L2a=20, L2b=10, L3a=13, L3b=10))  # sum 80
    assert evaluate_course(b, [], criteria=MRECIST).baseline_sum_mm == 80
    pr = Assessment(day(42), pleural=pleural(L1a=10, L1b=8, L2a=14, L2b=7, L3a=9, L3b=8))  # 56 = -30 %
    pd_ = Assessment(day(84), pleural=pleural(L1a=14, L1b=11, L2a=18, L2b=9, L3a=8, L3b=8))  # 68 = +21 % nadir
    r = evaluate_course(b, [pr, pd_], criteria=MRECIST)
    assert [a.target_sum_mm for a in r.assessments] == [56, 68]
    assert [a.response for a in r.assessments] == [PR, PD]


def test_mrecist_validation():
    too_many = Assessment(D0, pleural=pleural(L1a=15, L1b=12, L1c=20))
    with pytest.raises(ResponseValidationError, match="at most 2"):
        validate_baseline(too_many, MRECIST)
    thin = Assessment(D0, pleural=pleural(L1a=6))
    with pytest.raises(ResponseValidationError, match="not measurable"):
        validate_baseline(thin, MRECIST)
    validate_baseline(thin, MRECIST, min_pleural_mm=5)
    with pytest.raises(ResponseValidationError, match="only used with mRECIST"):
        validate_baseline(Assessment(D0, lesions(liver1=20), pleural=pleural(L1a=15)))


def test_mcode_mapping():
    assert mcode_disease_status(STATUS_CR)["trend"] == "no_evidence_of_disease"
    assert mcode_disease_status("partial_remission")["code"] == "268910001"
    assert mcode_disease_status("stable")["code"] == "359746009"
    assert mcode_disease_status(STATUS_RECURRENCE)["code"] == "271299001"
    assert mcode_disease_status("not_evaluable")["code"] == "709137006"


def test_result_is_json_ready():
    import json

    r = evaluate_course(base(liver1=50), [fu(56, liver1=30)])
    json.dumps(r.to_dict())
