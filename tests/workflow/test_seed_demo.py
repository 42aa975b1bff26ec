"""The demo clinic (``manage.py seed_demo``): complete, consistent with every scheduling rule, idempotent."""

import datetime as dt
import io
import sys
import types
from collections import Counter, defaultdict

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.utils import timezone

from workflow.pathway import demo
from workflow import roles
from workflow.pathway.calendar import ClinicCalendar, public_holiday
from workflow.models import (
    AppointmentStatus,
    Closure,
    Course,
    CourseStatus,
    Diagnosis,
    Downtime,
    FollowUpVisit,
    Fraction,
    Machine,
    MachineKind,
    Patient,
    SimulationVisit,
    Treatment,
)
from workflow.pathway.scheduling import daily_list, local_day

pytestmark = pytest.mark.django_db
WEDNESDAY = dt.date(2027, 3, 10)
LIVE = (AppointmentStatus.SCHEDULED, AppointmentStatus.DELIVERED)


@pytest.fixture(autouse=True)
def us_calendar(settings):
    settings.CLINIC_HOLIDAY_COUNTRY = "US"
    settings.CLINIC_HOLIDAY_SUBDIVISION = None


@pytest.fixture
def fake_extension(monkeypatch):
    """A stand-in for the toxicity/outcomes/planning demo modules, plus one that is not installed."""
    calls = []
    module = types.ModuleType("radpath_fake_demo_ext")
    module.seed = lambda **kwargs: calls.append(kwargs)
    monkeypatch.setitem(sys.modules, "radpath_fake_demo_ext", module)
    monkeypatch.setattr(demo, "DEMO_EXTENSIONS", ["radpath_missing_demo_ext.seed", "radpath_fake_demo_ext.seed"])
    return calls


def seed(**options):
    out = io.StringIO()
    call_command("seed_demo", stdout=out, **options)
    return out.getvalue()


def counts():
    models = [Patient, Diagnosis, Treatment, Course, Fraction, SimulationVisit, FollowUpVisit, Machine, Closure, Downtime, User]
    result = {m.__name__: m.objects.count() for m in models}
    result.update({f"history:{m.__name__}": m.history.count() for m in (Patient, Course, Fraction)})
    return result


def assert_no_overlaps():
    by_machine = defaultdict(list)
    for f in Fraction.objects.filter(status__in=LIVE):
        by_machine[f.machine_id].append((f.starts_at, f.ends_at, f"fx {f.pk}"))
    for s in SimulationVisit.objects.exclude(status=AppointmentStatus.CANCELLED):
        by_machine[s.machine_id].append((s.starts_at, s.ends_at, f"sim {s.pk}"))
    for intervals in by_machine.values():
        intervals.sort()
        for a, b in zip(intervals, intervals[1:]):
            assert a[1] <= b[0], f"{a[2]} overlaps {b[2]}"


def assert_fractions_follow_the_calendar():
    calendar = ClinicCalendar()
    days = {local_day(s) for s in Fraction.objects.filter(status__in=LIVE).values_list("starts_at", flat=True)}
    closed = {d: calendar.closure_reason(d) for d in days if not calendar.is_open(d)}
    assert not closed, closed
    first, last = min(days), max(days)
    # The window holds a manual closure and public holidays, and the courses went around them.
    assert Closure.objects.filter(date__range=(first, last)).exists()
    holidays = [first + dt.timedelta(n) for n in range((last - first).days) if public_holiday(first + dt.timedelta(n))]
    assert holidays


def assert_courses_are_consistent():
    for course in Course.objects.all():
        delivered = list(course.fractions.filter(status=AppointmentStatus.DELIVERED).order_by("starts_at"))
        live = list(course.fractions.filter(status__in=LIVE).order_by("starts_at"))
        assert [f.number for f in live] == list(range(1, len(live) + 1)), course
        assert sum(f.delivered_dose_gy for f in delivered) == course.dose_per_fraction_gy * len(delivered)
        per_day = Counter(local_day(f.starts_at) for f in live)
        assert max(per_day.values(), default=1) == 1, course  # no BID courses in the demo: one a day
        if course.status == CourseStatus.COMPLETED:
            assert len(delivered) == course.fractions_planned and course.completed_on == local_day(delivered[-1].starts_at)
            assert course.followup_visits.exists()
        elif course.status == CourseStatus.ON_TREATMENT:
            assert 0 < len(delivered) < course.fractions_planned and len(live) == course.fractions_planned
        elif course.status == CourseStatus.STOPPED:
            assert course.termination_reason and course.stopped_on and not course.fractions.filter(status=AppointmentStatus.SCHEDULED).exists()
        else:
            assert not delivered
        if course.status in (CourseStatus.APPROVED, CourseStatus.ON_TREATMENT, CourseStatus.COMPLETED, CourseStatus.STOPPED):
            assert course.plan_approved and course.simulations.filter(status=AppointmentStatus.DELIVERED).exists() or course.technique == "IORT_E"
        course.full_clean(validate_unique=False)  # N x d = D, IORT single fraction, stop reason, diagnosis owner


def test_small_demo_clinic_is_complete_consistent_and_idempotent(fake_extension):
    output = seed(patients=20, today=WEDNESDAY)

    machines = Machine.objects.all()
    assert sorted(m.name for m in machines if m.kind == MachineKind.LINAC) == ["Halcyon", "TrueBeam 1", "TrueBeam 2"]
    assert {m.kind for m in machines} == {MachineKind.LINAC, MachineKind.CT_SIM, MachineKind.IORT}
    assert Patient.objects.count() == 20
    statuses = Counter(Course.objects.values_list("status", flat=True))
    assert set(statuses) == set(CourseStatus.values), statuses
    assert Course.objects.filter(status=CourseStatus.STOPPED, termination_reason="toxicity").exists()
    assert Course.objects.filter(intent="reirradiation").exists() and Course.objects.filter(technique="IORT_E", status="completed").exists()
    assert Treatment.objects.filter(kind="surgery", surgery_type__in=["pd", "epp"]).exists()

    todays = list(daily_list(WEDNESDAY))
    assert len(todays) >= 5 and len({f.machine.name for f in todays}) >= 2
    assert any(f.status == AppointmentStatus.DELIVERED for f in todays)
    assert any(f.status == AppointmentStatus.SCHEDULED for f in todays)

    missed = Fraction.objects.filter(status=AppointmentStatus.MISSED)
    assert missed.exists()
    for f in missed:
        assert f.course.fractions.filter(is_makeup=True).exclude(status=AppointmentStatus.CANCELLED).exists()
    assert Fraction.objects.filter(status_note__startswith="Moved for downtime").exists()
    assert Downtime.objects.filter(starts_at__date__lt=WEDNESDAY).exists()

    for role in roles.ROLES:
        user = User.objects.get(username=role)
        assert list(user.groups.values_list("name", flat=True)) == [role]
        assert user.check_password(demo.DEMO_PASSWORD)
    assert User.objects.get(username="admin").is_superuser
    for role in [*roles.ROLES, "admin"]:
        assert f"{role}" in output
    assert demo.DEMO_PASSWORD in output

    assert_no_overlaps()
    assert_fractions_follow_the_calendar()
    assert_courses_are_consistent()
    # Every fraction change is in the audit history with the user who made it.
    delivered = Fraction.objects.filter(status=AppointmentStatus.DELIVERED).first()
    assert delivered.history.filter(status="delivered").first().history_user.username == roles.THERAPIST

    # The extension contract: the missing module was skipped, the present one called once with the documented args.
    assert len(fake_extension) == 1
    kwargs = fake_extension[0]
    assert set(kwargs) == {"rng", "today", "users", "courses"} and kwargs["today"] == WEDNESDAY
    assert set(kwargs["users"]) == {*roles.ROLES, "admin"}
    assert len(kwargs["courses"]) == Course.objects.count()
    phases = {c["phase"] for c in kwargs["courses"]}
    assert phases == set(CourseStatus.values)
    for entry in kwargs["courses"]:
        assert entry["phase"] == entry["course"].status and entry["site"] == entry["diagnosis"].site
        assert {"intent", "start", "end", "surgery", "missed", "termination", "toxicity", "multimodal"} <= set(entry["story"])
    stopped = [e for e in kwargs["courses"] if e["story"]["toxicity"]]
    assert stopped and stopped[0]["story"]["termination"]["reason"] == "toxicity"

    before = counts()
    again = seed(patients=20, today=WEDNESDAY)
    assert counts() == before
    assert "already loaded" in again and "radpath-demo" in again
    assert len(fake_extension) == 1


def test_extensions_skip_only_missing_modules(monkeypatch):
    broken = types.ModuleType("radpath_broken_demo_ext")
    monkeypatch.setitem(sys.modules, "radpath_broken_demo_ext", broken)  # exists, but has no seed function
    args = dict(seed=1, today=WEDNESDAY, users={}, courses=[])
    assert demo.run_extensions(["radpath_nowhere.demo.seed", "workflow.no_such_demo.seed"], **args) == []
    with pytest.raises(AttributeError):
        demo.run_extensions(["radpath_broken_demo_ext.seed"], **args)
    # An ImportError raised inside an existing module is a bug in it, not a missing module: it propagates.
    failing = types.ModuleType("radpath_failing_demo_ext")

    def seed_fails(**kwargs):
        raise ImportError("No module named 'something_the_extension_needs'")

    failing.seed = seed_fails
    monkeypatch.setitem(sys.modules, "radpath_failing_demo_ext", failing)
    with pytest.raises(ImportError):
        demo.run_extensions(["radpath_failing_demo_ext.seed"], **args)


def test_default_demo_clinic_for_today(monkeypatch):
    """The clinic ``make demo`` loads: ~60 patients, every phase, a busy treatment list on the next treatment day."""
    monkeypatch.setattr(demo, "DEMO_EXTENSIONS", [])
    seed()
    assert Patient.objects.count() == demo.DEFAULT_PATIENTS
    assert Machine.objects.filter(kind=MachineKind.LINAC).count() == 3
    assert set(Course.objects.values_list("status", flat=True)) == set(CourseStatus.values)
    figures = demo.figures(timezone.localdate())
    assert 20 <= figures["list_size"] <= 40, figures
    assert len(figures["list_by_machine"]) == 3
    oldest = Fraction.objects.filter(status=AppointmentStatus.DELIVERED).order_by("starts_at").first()
    assert (dt.date.fromisoformat(figures["list_day"]) - local_day(oldest.starts_at)).days > 4 * 365
    assert_no_overlaps()
    assert_courses_are_consistent()
