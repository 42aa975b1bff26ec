"""Registry import rules kept by the fast import: the models' own messages without a ``full_clean`` per row,
follow-ups checked against the whole file in any row order, rows before their patient or course, a second death
for a patient already in RadPath, and the bulk writer (defaults, audit rows, INSERT lengths)."""

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from outcomes.bulk import _statement_sizes, insert_rows
from outcomes.models import CourseOutcome, Death, FollowUpAssessment
from outcomes.registry_import import BATCH, RegistryImportError, import_registry
from workflow.models import Course, Patient

from .test_registry_import import GOOD, csv_text

PATIENT = GOOD[0]


def errors_of(rows, **kw):
    with pytest.raises(RegistryImportError) as exc:
        import_registry(csv_text(rows), **kw)
    return [(e.line, e.field, e.message) for e in exc.value.errors]


def full_clean_messages(**values):
    try:
        Patient(**values).full_clean(validate_unique=False)
    except ValidationError as exc:
        return exc.message_dict
    return {}


TOMORROW = (dt.date.today() + dt.timedelta(days=1)).isoformat()


@pytest.mark.parametrize("field, value, message", [
    ("mrn", "R" * 33, "Ensure this value has at most 32 characters (it has 33)."),
    ("mrn", "R\t1", "Control characters (line breaks, tabs, NUL) are not allowed."),
    ("given_name", "G" * 101, "Ensure this value has at most 100 characters (it has 101)."),
    ("family_name", "Doe\x7f", "Control characters (line breaks, tabs, NUL) are not allowed."),
    ("birth_date", "1899-12-31", "Birth date must be between 1900-01-01 and "),
    ("birth_date", TOMORROW, "Birth date is in the future."),
])
def test_patient_rows_get_the_models_own_messages(oncologist, field, value, message):
    """Names and MRN are checked without a ``full_clean`` per row (length, control characters) and birth dates
    once per date: a bad value still gets exactly what ``Patient.full_clean`` says, on its line and field."""
    row = dict(PATIENT, **{field: value})
    got = [(line, f, m) for line, f, m in errors_of([row], user=oncologist) if f == field]
    assert len(got) == 1 and got[0][0] == 2 and got[0][2].startswith(message), got
    model = {"mrn": row["mrn"], "given_name": row["given_name"], "family_name": row["family_name"],
             "birth_date": dt.date.fromisoformat(row["birth_date"]), "sex": row["sex"]}
    assert full_clean_messages(**model)[field] == [got[0][2]]
    assert Patient.objects.count() == 0


def test_names_and_mrn_at_their_maximum_length_are_imported(oncologist):
    row = dict(PATIENT, mrn="M" * 32, given_name="G" * 100, family_name="F" * 100)
    assert import_registry(csv_text([row]), user=oncologist).patients == 1
    assert Patient.objects.get().family_name == "F" * 100


def course_rows(doses):
    """One patient and one 25- or 7-fraction course per (dose, fractions)."""
    rows = []
    for i, (dose, fractions) in enumerate(doses, start=1):
        rows.append(dict(PATIENT, mrn=f"C{i}"))
        rows.append({"record_type": "course", "mrn": f"C{i}", "course_ref": "1", "intent": "adjuvant",
                     "technique": "3DCRT", "treated_site": "Breast", "total_dose_gy": dose, "fractions": fractions,
                     "rt_start": "2019-07-01"})
    return rows


def test_course_checks_are_the_models_per_value_as_written(oncologist):
    """``Course.full_clean`` is run once per distinct prescription as written: ``50.40`` is valid, ``50.400`` (the
    same number) has three decimal places; a repeated bad prescription is reported on every row."""
    rows = course_rows([("50.40", "28"), ("50.400", "28"), ("150", "25"), ("150", "25"), ("100", "7")])
    assert errors_of(rows, user=oncologist) == [
        (5, "total_dose_gy", "Ensure that there are no more than 2 decimal places."),
        (7, "total_dose_gy", "Ensure this value is less than or equal to 100."),
        (9, "total_dose_gy", "Ensure this value is less than or equal to 100."),
        (11, "total_dose_gy", "Total dose 100 Gy is not 7 x 14.29 Gy = 100.03 Gy."),
    ]
    assert Course.objects.count() == 0


def test_followups_are_checked_against_the_whole_file_whatever_the_row_order(oncologist):
    """Follow-ups listed before their course and the death: each one after the death, or more than a year before
    the course's start, is reported on its own line (the file is read again only to list them)."""
    course, death = GOOD[1], GOOD[4]  # RT from 2019-07-01, death on 2021-05-02
    rows = [
        {"record_type": "followup", "mrn": "R1", "course_ref": "1", "date": "2021-06-01", "imaging": "CT"},
        {"record_type": "followup", "mrn": "R1", "course_ref": "1", "date": "2018-01-01", "imaging": "CT"},
        {"record_type": "followup", "mrn": "R1", "course_ref": "1", "date": "2020-01-01", "last_known_alive": "2021-07-01"},
        {"record_type": "followup", "mrn": "R1", "course_ref": "2", "date": "2020-01-01"},
        death, course, PATIENT,
    ]
    assert errors_of(rows, user=oncologist) == [
        (2, "date", "after the patient's death on 2021-05-02 (line 6)"),
        (3, "date", "more than a year before the course's rt_start"),
        (4, "last_known_alive", "after the patient's death on 2021-05-02 (line 6)"),
        (5, "course_ref", "no course 2 for R1 in this file or in RadPath"),
    ]
    assert FollowUpAssessment.objects.count() == 0 and Patient.objects.count() == 0


def test_rows_before_their_patient_and_course_import_as_in_order(oncologist):
    """The import reads patients, then courses, then follow-ups and deaths: the file's row order does not matter."""
    backwards = [dict(r, mrn="B1") for r in reversed(GOOD)]
    assert import_registry(csv_text(backwards), user=oncologist).to_dict() == \
        import_registry(csv_text(GOOD), user=oncologist).to_dict() == {"patients": 1, "courses": 1, "followups": 2, "deaths": 1}
    fields = ("best_response", "first_progression_date", "first_local_failure_date", "last_assessment_date",
              "last_contact_date", "rt_start", "rt_end")
    a, b = (CourseOutcome.objects.filter(patient__mrn=m).values(*fields).get() for m in ("R1", "B1"))
    assert a == b and a["best_response"] == "PR" and a["first_progression_date"] == dt.date(2020, 6, 1)
    assert FollowUpAssessment.objects.filter(patient__mrn="B1").order_by("date").values_list("response", flat=True)[1] == "PD"


def test_a_second_death_for_a_patient_already_in_radpath_is_refused(oncologist, client, users):
    """One live death per patient: a file giving another to a patient RadPath already records as dead is refused
    on its line (it was a database error), and accepted once that death is voided."""
    import_registry(csv_text(GOOD), user=oncologist)
    again = [{"record_type": "death", "mrn": "R1", "date": "2021-06-01", "cause": "other"}]
    assert errors_of(again, user=oncologist) == [(2, "mrn", "second death for R1: RadPath already records one on 2021-05-02")]
    assert Death.objects.count() == 1
    Death.objects.get().void(oncologist, "entered in error")
    assert import_registry(csv_text(again), user=oncologist).deaths == 1
    assert Death.objects.active().get().date == dt.date(2021, 6, 1)


def test_insert_rows_gives_defaults_time_stamps_and_audit_rows(oncologist):
    before = timezone.now()
    pks = insert_rows(Patient, ("mrn", "family_name"), [("P1", "One"), ("P2", "Two")], history_user=oncologist)
    p1, p2 = Patient.objects.get(pk=pks[0]), Patient.objects.get(pk=pks[1])
    assert (p1.mrn, p2.family_name, p1.sex, p1.given_name, p1.birth_date) == ("P1", "Two", "U", "", None)
    assert p1.created_at == p1.updated_at == p2.created_at and p1.created_at >= before
    h = Patient.history.filter(mrn="P2").get()
    assert (h.history_type, h.history_user, h.id, h.family_name) == ("+", oncologist, p2.pk, "Two")
    with pytest.raises(ValueError):
        insert_rows(Patient, ("mrn", "shoe_size"), [("P3", 44)])


@pytest.mark.parametrize("n, limit, sizes", [
    (1000, 1000, [1000]), (1000, 967, [500, 500]), (2500, 1000, [834, 833, 833]), (7, 1000, [7]), (0, 1000, []),
])
def test_inserts_are_split_into_statements_of_at_most_two_lengths(n, limit, sizes):
    assert _statement_sizes(n, limit) == sizes
    assert len({len(set(_statement_sizes(BATCH, lim))) for lim in range(50, 2000, 7)} - {1, 2}) == 0


LONG_TEXT = [
    # (column, model field it fills, its max_length)
    ("histology", "histology", 120), ("stage", "stage", 40), ("chemotherapy", "agent", 120), ("trial_arm", "trial_arm", 60),
]


@pytest.mark.parametrize("column, model_field, limit", LONG_TEXT)
def test_free_text_longer_than_its_field_is_refused_on_its_line(oncologist, column, model_field, limit):
    """Histology, stage, chemotherapy agent and trial arm have the length of their model field: one character over
    is refused by line and column with Django's own wording (PostgreSQL raised a DataError, a 500, and SQLite
    stored it), and a value at the limit imports."""
    over = dict(PATIENT, **{column: "x" * (limit + 1)})
    assert errors_of([over], user=oncologist) == [
        (2, column, f"Ensure this value has at most {limit} characters (it has {limit + 1}).")]
    assert Patient.objects.count() == 0
    at = dict(PATIENT, **{column: "x" * limit})
    assert import_registry(csv_text([at]), user=oncologist).patients == 1
    from workflow.models import Diagnosis, Treatment

    stored = (Diagnosis.objects.values_list(model_field, flat=True) if column in ("histology", "stage")
              else Treatment.objects.exclude(**{model_field: ""}).values_list(model_field, flat=True))
    assert "x" * limit in list(stored)


def test_a_nul_character_is_refused_on_its_column(oncologist):
    """NUL cannot be stored in a PostgreSQL text column (it was a 500); any cell holding one is refused by name."""
    rows = [dict(PATIENT, histology="epithelioid\x00"), dict(GOOD[1], treated_site="Left\x00hemithorax")]
    assert errors_of(rows, user=oncologist) == [(2, "histology", "NUL characters are not allowed."),
                                               (3, "treated_site", "NUL characters are not allowed.")]
    assert Patient.objects.count() == 0


@pytest.mark.parametrize("column, label", [
    ("diagnosed_on", "Diagnosis date"), ("surgery_date", "Surgery date"), ("chemotherapy_date", "Chemotherapy date"),
])
def test_clinical_dates_outside_the_clinics_window_are_refused(oncologist, column, label):
    """Every clinical date lies in the clinic's window (1900-01-01 to 30 years ahead), as in the models."""
    from workflow.params import window_message

    row = dict(PATIENT, birth_date="", **{column: "1899-12-31"})
    assert errors_of([row], user=oncologist) == [(2, column, window_message(label))]


@pytest.mark.parametrize("column, record, label", [("rt_start", 1, "RT start"), ("date", 2, "Date"), ("date", 4, "Date")])
def test_course_followup_and_death_dates_outside_the_window_are_refused(oncologist, column, record, label):
    from workflow.params import window_message

    rows = [dict(r) for r in GOOD]
    rows[record][column] = "1899-12-31"
    got = errors_of(rows, user=oncologist)
    assert (record + 2, column, window_message(label)) in got, got


def test_treatments_and_courses_before_birth_are_refused(oncologist):
    """Nothing clinical happens before the patient was born (``workflow.pathway.date_rules``)."""
    rows = [dict(r) for r in GOOD]
    rows[0].update(birth_date="2019-03-01", diagnosed_on="2019-03-10", surgery_date="2019-02-20",
                   chemotherapy_date="2019-04-01")
    rows[1].update(rt_start="2019-02-01", rt_end="2019-03-12")
    rows[2:] = []
    assert errors_of(rows, user=oncologist) == [(2, "surgery_date", "before the date of birth"),
                                               (3, "rt_start", "before the date of birth")]


def test_followups_after_a_death_radpath_already_records_are_refused(oncologist):
    """A follow-up (or last-known-alive date) for a patient RadPath records as dead must not be after the death,
    as within one file: it was imported and made the patient alive after their death."""
    import_registry(csv_text(GOOD), user=oncologist)  # R1 died on 2021-05-02
    later = [{"record_type": "followup", "mrn": "R1", "course_ref": "1", "date": "2021-06-01", "imaging": "CT",
              "response": "SD"},
             {"record_type": "followup", "mrn": "R1", "course_ref": "1", "date": "2021-04-01",
              "last_known_alive": "2021-07-01"},
             {"record_type": "followup", "mrn": "R1", "course_ref": "1", "date": "2021-04-20"}]
    assert errors_of(later, user=oncologist) == [
        (2, "date", "after the patient's death on 2021-05-02 (recorded in RadPath)"),
        (3, "last_known_alive", "after the patient's death on 2021-05-02 (recorded in RadPath)")]
    assert FollowUpAssessment.objects.count() == 2
    assert import_registry(csv_text(later[2:]), user=oncologist).followups == 1


def test_a_course_ref_longer_than_its_course_name_allows_is_refused(oncologist):
    """A registry course is named "Registry <course_ref>" (80 characters), which is how a later file's follow-ups
    find it: a longer reference was cut, so two references sharing 71 characters became one name, and a later
    follow-up naming the full reference found no course."""
    from outcomes.registry_import import COURSE_REF_MAX

    assert COURSE_REF_MAX == 71
    rows = [PATIENT, dict(GOOD[1], course_ref="C" * 72)]
    assert errors_of(rows, user=oncologist) == [(3, "course_ref", "Ensure this value has at most 71 characters (it has 72).")]
    ok = [PATIENT, dict(GOOD[1], course_ref="C" * 71)]
    assert import_registry(csv_text(ok), user=oncologist).courses == 1
    later = [{"record_type": "followup", "mrn": "R1", "course_ref": "C" * 71, "date": "2019-11-01", "imaging": "CT",
              "response": "PR"}]
    assert import_registry(csv_text(later), user=oncologist).followups == 1
    assert Course.objects.get().name == "Registry " + "C" * 71
