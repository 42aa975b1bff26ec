"""A real registry of patients mostly without radiotherapy, imported without inventing an RT course, analysed from
diagnosis against R.

Data: GBSG2 (Schumacher et al. 1994; lifelines ``load_gbsg2``, = R ``TH.data::GBSG2``), 686 patients;
``time`` = recurrence-free survival in days, ``cens`` 1 = recurrence or death. The trial's hormonal therapy arm
(horTh = yes, 246 patients) is imported here *with* an RT course and the 440 others *without* one, so the cohort's
``radiotherapy`` groups are R's ``horTh`` groups. Each patient's event is a follow-up CT read as progression (PD)
at diagnosis + ``time``, a censored patient's a follow-up CT read as stable disease (SD) on that day, so PFS from
diagnosis is R's ``Surv(time, cens)``. For the patients without RT these rows have no ``course_ref``.

R 4 ``survival`` as printed for this data (same values as tests/outcomes/test_covariate_analyses.py):
``survfit(Surv(time, cens) ~ horTh)``: no 440, 205 events, median 1528 (1296, 1814); yes 246, 94, 2018
(1918, NA). ``survdiff``: chisq 8.56 on 1 df, p = 0.003. ``coxph(Surv(time, cens) ~ horTh)``
(``summary(f)$coefficients``, digits 7): coef -0.3640099, exp(coef) 0.6948843, se 0.1250446, z -2.911041,
p 0.003602266.
"""

import csv
import datetime as dt
import io

import pytest

from outcomes import services
from outcomes.cohorts import CohortFilter
from outcomes.models import FollowUpAssessment, PatientOutcome
from outcomes.registry_import import COLUMNS, RegistryImportError, import_registry
from workflow.models import Course

D0 = dt.date(1984, 7, 1)


def gbsg2_rows():
    from lifelines.datasets import load_gbsg2

    data = load_gbsg2()
    rows = []
    for i, r in enumerate(data.itertuples(index=False), start=1):
        mrn = f"G{i:04d}"
        rt = r.horTh == "yes"
        rows.append({"record_type": "patient", "mrn": mrn, "site": "breast", "diagnosed_on": D0.isoformat(),
                     "birth_date": dt.date(D0.year - int(r.age), 1, 15).isoformat(), "sex": "F"})
        if rt:
            rows.append({"record_type": "course", "mrn": mrn, "course_ref": "1", "intent": "adjuvant",
                         "technique": "3DCRT", "treated_site": "Breast", "total_dose_gy": "50", "fractions": "25",
                         "rt_start": (D0 + dt.timedelta(days=1)).isoformat()})
        rows.append({"record_type": "followup", "mrn": mrn, "course_ref": "1" if rt else "",
                     "date": (D0 + dt.timedelta(days=int(r.time))).isoformat(), "imaging": "CT",
                     "response": "PD" if int(r.cens) == 1 else "SD"})
    return rows, data


def to_csv(rows):
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return out.getvalue()


@pytest.fixture
def gbsg2(oncologist):
    rows, data = gbsg2_rows()
    summary = import_registry(to_csv(rows), user=oncologist)
    assert summary.to_dict() == {"patients": 686, "courses": 246, "followups": 686, "deaths": 0}
    return data


def test_patients_without_rt_import_without_an_invented_course(gbsg2):
    assert Course.objects.count() == 246
    assert FollowUpAssessment.objects.filter(course__isnull=True).count() == 440
    assert PatientOutcome.objects.filter(first_progression_date__isnull=False,
                                         patient__courses__isnull=True).count() == 205
    out = PatientOutcome.objects.get(patient__mrn="G0001")  # horTh no, time 1814, cens 1
    assert (out.best_response, out.first_progression_date) == ("PD", D0 + dt.timedelta(days=1814))


def test_pfs_from_diagnosis_by_radiotherapy_matches_r_survfit_survdiff_coxph(gbsg2):
    cohort = CohortFilter.from_params({"site": "breast"}).cohort()
    body = services.analyze(cohort, endpoint="pfs", time_zero="diagnosis", group_by="radiotherapy",
                            cox_terms="group").to_dict()
    got = {g["label"]: (g["n"], g["events"], g["median"]["median"], g["median"]["lower"], g["median"]["upper"])
           for g in body["groups"]}
    assert got == {"no": (440, 205, 1528, 1296, 1814), "yes": (246, 94, 2018, 1918, None)}
    assert [g["display"] for g in body["groups"]] == ["No radiotherapy", "Radiotherapy"]
    assert round(body["logrank"]["chisq"], 2) == 8.56 and round(body["logrank"]["p_value"], 3) == 0.003
    (term,) = body["cox"]["terms"]
    assert term["covariate"] == "radiotherapy=yes"
    assert (round(term["coef"], 7), round(term["se"], 7), round(term["p_value"], 9)) == (-0.3640099, 0.1250446, 0.003602266)


def test_from_the_start_of_rt_the_patients_without_rt_are_left_out_and_said_so(gbsg2):
    cohort = CohortFilter.from_params({}).cohort()
    body = services.analyze(cohort, endpoint="os", time_zero="rt_start", cox=False).to_dict()
    assert body["n_patients"] == 246
    assert any(n.startswith("440 patient(s) of the cohort had no radiotherapy course") for n in body["notes"])
    only = CohortFilter.from_params({"radiotherapy": "no"}).cohort()
    body = services.analyze(only, endpoint="pfs", time_zero="diagnosis", cox=False).to_dict()
    assert (body["n_patients"], body["groups"][0]["events"], body["groups"][0]["median"]["median"]) == (440, 205, 1528)


def test_de_identified_export_carries_the_patients_without_rt_and_their_assessments(client, users, gbsg2):
    import pandas as pd

    client.force_login(users["researcher"])
    q = {"time_zero": "diagnosis", "site": "breast"}
    patients = pd.read_csv(io.BytesIO(client.get("/api/outcomes/exports/patients.csv", q).content), comment="#")
    assert len(patients) == 686
    assert patients["radiotherapy"].value_counts().to_dict() == {"no": 440, "yes": 246}
    no_rt = patients[patients["radiotherapy"] == "no"]
    assert no_rt["pseudo_course_id"].isna().all() and (no_rt["intent"] == "none").all()
    assert no_rt["pfs_event"].sum() == 205
    assessments = pd.read_csv(io.BytesIO(client.get("/api/outcomes/exports/assessments.csv", q).content), comment="#")
    assert len(assessments) == 686 and assessments["pseudo_course_id"].isna().sum() == 440
    assert set(assessments["pseudo_id"]) == set(patients["pseudo_id"])


def test_a_follow_up_without_course_ref_for_a_patient_with_a_course_is_refused(oncologist):
    rows = [{"record_type": "patient", "mrn": "X1", "site": "breast", "diagnosed_on": "2020-01-01"},
            {"record_type": "course", "mrn": "X1", "course_ref": "1", "intent": "adjuvant", "technique": "3DCRT",
             "treated_site": "Breast", "total_dose_gy": "50", "fractions": "25", "rt_start": "2020-02-01"},
            {"record_type": "followup", "mrn": "X1", "course_ref": "", "date": "2020-06-01", "imaging": "CT",
             "response": "SD"},
            {"record_type": "followup", "mrn": "NOBODY", "course_ref": "", "date": "2020-06-01"}]
    with pytest.raises(RegistryImportError) as exc:
        import_registry(to_csv(rows), user=oncologist)
    errors = {(e.line, e.field): e.message for e in exc.value.errors}
    assert errors[(4, "course_ref")].startswith("required: patient X1 has an RT course")
    assert errors[(5, "mrn")] == "no patient NOBODY in this file or in RadPath"
    assert not Course.objects.exists() and not FollowUpAssessment.objects.exists()


def test_swimmer_plot_says_which_patients_it_shows(gbsg2):
    cohort = CohortFilter.from_params({"site": "breast"}).cohort()
    svg = services.swimmer_figure(cohort, time_zero="diagnosis", group_by="multimodal", fmt="svg", limit=40).decode()
    assert "The 40 of 686 patients with the longest overall survival time" in svg
    assert "Not multimodal" in svg and ">other<" not in svg


def test_swimmer_plot_follows_the_analysis_grouping(gbsg2, settings):
    """The swimmer's patients and colours are the OS analysis' for the same grouping: none (one colour), the
    radiotherapy groups (R's horTh here), and a group below the minimum cohort left out and named in the title."""
    cohort = CohortFilter.from_params({"site": "breast"}).cohort()
    plain = services.swimmer_figure(cohort, time_zero="diagnosis", fmt="svg", limit=40).decode()
    assert "Not multimodal" not in plain and "radiotherapy" not in plain
    # the 40 longest follow-up times (OS: no deaths, last contact = the follow-up): the groups surely among them
    times = gbsg2.sort_values("time", ascending=False)["time"]
    top = gbsg2[gbsg2["time"] > times.iloc[40]]
    expected = {"yes": "Radiotherapy", "no": "No radiotherapy"}
    by_rt = services.swimmer_figure(cohort, time_zero="diagnosis", group_by="radiotherapy", fmt="svg",
                                    limit=40).decode()
    assert set(top["horTh"]) and all(expected[arm] in by_rt for arm in set(top["horTh"]))  # "Radiotherapy": R
    settings.RADPATH_MIN_COHORT = 300  # the 246 patients with RT fall below it
    few = services.swimmer_figure(cohort, time_zero="diagnosis", group_by="radiotherapy", fmt="svg",
                                  limit=40).decode()
    assert "The 40 of 440 patients with the longest overall survival time" in few
    assert "group(s) Radiotherapy not shown: fewer than 300 patients" in few
    assert "No radiotherapy" in few
    with pytest.raises(services.RuleViolation) as exc:
        services.swimmer_figure(cohort, time_zero="diagnosis", group_by="shoe_size")
    assert exc.value.field == "group_by"