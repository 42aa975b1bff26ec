"""Side-effect pages: quick entry (from the treatment list, the patient page or a course), a course's side effects
with regrade / resolve, the hold decision form and the oncologist's weekly-review worklist.

Thin views: the rules are in ``workflow.toxicity``; its complaints are shown on the form field they name.
"""

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from . import ctcae
from . import services as tox
from ..errors import RuleViolation
from ..forms import add_service_error, service_error_text
from ..widgets import DateInput
from ..pathway.models import Course, CourseStatus, Patient
from ..params import parse_id
from .models import ActionTaken, Attribution, CourseHold, HoldDecision, ToxicityEvent

SERVICE_ERRORS = (RuleViolation, DjangoValidationError)
IDENTIFIED = ("workflow.view_identified",)


GRADES = [(g, f"{g} {ctcae.GRADE_NAMES[g]}") for g in range(1, 6)]


def identified(*perms):
    return permission_required(IDENTIFIED + perms, raise_exception=True)


def _safe_next(request):
    target = request.POST.get("next") or request.GET.get("next")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}, require_https=request.is_secure()):
        return target
    return ""


def vocabulary():
    """{term: {"g": [grades], "d": {grade: description}}}; generic descriptions are left to the page's script."""
    out = {}
    for t in ctcae.terms():
        entry = {"g": list(t.grades)}
        if t.curated:
            entry["d"] = {str(g): d for g, d in t.descriptions.items()}
        out[t.term] = entry
    return out


# --- quick entry ----------------------------------------------------------------------------------------------------


class ToxicityForm(forms.Form):
    course = forms.ModelChoiceField(queryset=Course.objects.none(), empty_label=None)
    term = forms.CharField(
        label="CTCAE term",
        max_length=120,
        widget=forms.TextInput(attrs={"list": "ctcae-terms", "autocomplete": "off", "autofocus": True, "placeholder": "e.g. Pneumonitis"}),
    )
    grade = forms.TypedChoiceField(choices=GRADES, coerce=int, widget=forms.RadioSelect)
    onset_date = forms.DateField(widget=DateInput)
    baseline = forms.BooleanField(required=False, help_text="Present before the course started")
    attribution = forms.ChoiceField(choices=Attribution.choices, initial=Attribution.POSSIBLE, label="Attribution to RT")
    serious = forms.BooleanField(required=False, label="Serious adverse event")
    action_taken = forms.ChoiceField(choices=ActionTaken.choices, initial=ActionTaken.NONE)
    resolved_date = forms.DateField(widget=DateInput, required=False)
    notes = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)

    def __init__(self, *args, courses=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["course"].queryset = courses if courses is not None else Course.objects.active()

    def grade_options(self):
        """(grade, name, description, allowed, checked) for the radio buttons, for the term entered so far."""
        term = ctcae.lookup(self["term"].value())
        checked = str(self["grade"].value() or "")
        out = []
        for g, name in ((g, ctcae.GRADE_NAMES[g]) for g in range(1, 6)):
            allowed = term is None or g in term.grades
            desc = term.describe(g) if term and allowed else ("" if term else ctcae.GENERIC_GRADES[g])
            out.append({"grade": g, "name": name, "description": desc, "allowed": allowed, "checked": checked == str(g)})
        return out


def _courses_for(request):
    """The course(s) the entry is for: ?course= (that course), ?patient= (the patient's live courses)."""
    try:
        course_id = parse_id(request.POST.get("course") or request.GET.get("course"), "course")
        patient_id = parse_id(request.GET.get("patient") or request.POST.get("patient"), "patient")
    except DjangoValidationError as exc:
        raise Http404(" ".join(exc.messages)) from None
    if course_id:
        course = get_object_or_404(Course.objects.active().select_related("patient"), pk=course_id)
        return course.patient, Course.objects.active().filter(patient=course.patient), course
    if patient_id:
        patient = get_object_or_404(Patient.objects.active(), pk=patient_id)
        courses = Course.objects.active().filter(patient=patient)
        preferred = (
            courses.filter(status=CourseStatus.ON_TREATMENT).first()
            or courses.exclude(status__in=[CourseStatus.COMPLETED, CourseStatus.STOPPED]).first()
            or courses.order_by("-created_at").first()
        )
        if preferred is None:
            raise Http404("The patient has no radiotherapy course.")
        return patient, courses, preferred
    raise Http404("Say which course or patient.")


@identified("workflow.add_toxicityevent")
def toxicity_new(request):
    patient, courses, course = _courses_for(request)
    nxt = _safe_next(request)
    if request.method == "POST":
        form = ToxicityForm(request.POST, courses=courses)
        if form.is_valid():
            data = dict(form.cleaned_data)
            course = data.pop("course")
            try:
                event = tox.log_event(course, user=request.user, **data)
            except SERVICE_ERRORS as exc:
                add_service_error(form, exc)
            else:
                msg = f"{patient.name}: {event.term} grade {event.grade} logged."
                hold = tox.open_hold(course)
                if hold is not None and event.grade >= tox.hold_grade(event.term) and not event.baseline:
                    messages.warning(request, f"{msg} The course is ON HOLD until an oncologist records a decision.")
                else:
                    messages.success(request, msg)
                if "another" in request.POST:
                    return redirect(f"{reverse('toxicity-new')}?course={course.pk}" + (f"&next={nxt}" if nxt else ""))
                return redirect(nxt or reverse("toxicity-course", args=[course.pk]))
    else:
        initial = {"course": course, "onset_date": timezone.localdate()}
        if request.GET.get("term"):
            initial["term"] = request.GET["term"]
        form = ToxicityForm(initial=initial, courses=courses)
    return render(
        request,
        "workflow/toxicity/event_form.html",
        {"form": form, "patient": patient, "course": course, "next": nxt, "terms": ctcae.terms(), "vocabulary": vocabulary(),
         "generic": {str(k): v for k, v in ctcae.GENERIC_GRADES.items()}},
    )


# --- a course's side effects ---------------------------------------------------------------------------------------


class RegradeForm(forms.Form):
    grade = forms.TypedChoiceField(choices=GRADES, coerce=int)
    on_date = forms.DateField(widget=DateInput)


class ResolveForm(forms.Form):
    resolved_date = forms.DateField(widget=DateInput)


@identified("workflow.view_toxicityevent")
def toxicity_course(request, pk):
    course = get_object_or_404(Course.objects.active().select_related("patient"), pk=pk)
    events = list(ToxicityEvent.objects.active().filter(course=course).select_related("recorded_by"))
    for e in events:
        e.phase = tox.event_phase(e)
        e.history_rows = tox.grade_history(e)
        t = ctcae.lookup(e.term)
        e.allowed = list(t.grades) if t else []
        e.description = t.describe(e.grade) if t else ""
    today = timezone.localdate()
    milestones = tox.review_milestones(course)
    for m in milestones:
        m.state = m.status(today)
    return render(
        request,
        "workflow/toxicity/course.html",
        {
            "course": course,
            "patient": course.patient,
            "events": events,
            "hold": tox.open_hold(course),
            "holds": CourseHold.objects.active().filter(course=course).select_related("opened_by", "decided_by"),
            "milestones": milestones,
            "today": today,
            "start": tox.course_start(course),
            "end": tox.course_end(course),
        },
    )


@require_POST
@identified("workflow.change_toxicityevent")
def toxicity_regrade(request, pk):
    event = get_object_or_404(ToxicityEvent.objects.active(), pk=pk)
    form = RegradeForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give a grade and a date.")
    else:
        try:
            event = tox.regrade(event, grade=form.cleaned_data["grade"], on_date=form.cleaned_data["on_date"], user=request.user)
        except SERVICE_ERRORS as exc:
            messages.error(request, f"{event.term}: {service_error_text(exc)}")
        else:
            messages.success(request, f"{event.term} is now grade {event.grade} (worst {event.worst_grade}).")
    return redirect(_safe_next(request) or reverse("toxicity-course", args=[event.course_id]))


@require_POST
@identified("workflow.change_toxicityevent")
def toxicity_resolve(request, pk):
    event = get_object_or_404(ToxicityEvent.objects.active(), pk=pk)
    form = ResolveForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Give the resolution date.")
    else:
        try:
            tox.resolve(event, resolved_date=form.cleaned_data["resolved_date"], user=request.user)
        except SERVICE_ERRORS as exc:
            messages.error(request, f"{event.term}: {service_error_text(exc)}")
        else:
            messages.success(request, f"{event.term} resolved.")
    return redirect(_safe_next(request) or reverse("toxicity-course", args=[event.course_id]))


# --- hold decision ------------------------------------------------------------------------------------------------


class HoldDecisionForm(forms.Form):
    decision = forms.ChoiceField(choices=HoldDecision.choices, widget=forms.RadioSelect)
    note = forms.CharField(
        max_length=300, required=False, widget=forms.Textarea(attrs={"rows": 2}), help_text="Required to modify (how) or stop (why)."
    )


@identified("workflow.decide_hold")
def hold_decide(request, pk):
    hold = get_object_or_404(CourseHold.objects.active().select_related("course__patient", "event"), pk=pk)
    nxt = _safe_next(request)
    if not hold.is_open:
        messages.info(request, f"This hold was already decided: {hold.get_decision_display()}.")
        return redirect(nxt or reverse("toxicity-course", args=[hold.course_id]))
    if request.method == "POST":
        form = HoldDecisionForm(request.POST)
        if form.is_valid():
            try:
                tox.record_hold_decision(hold, decision=form.cleaned_data["decision"], note=form.cleaned_data["note"], user=request.user)
            except SERVICE_ERRORS as exc:
                add_service_error(form, exc)
            else:
                hold.refresh_from_db()
                verb = {"resume": "Treatment resumed", "modify": "Treatment resumes with a modified plan", "stop": "Course stopped"}[hold.decision]
                messages.success(request, f"{hold.course.patient.name}: {verb}.")
                return redirect(nxt or reverse("toxicity-course", args=[hold.course_id]))
    else:
        form = HoldDecisionForm()
    return render(request, "workflow/toxicity/hold_decide.html", {"form": form, "hold": hold, "course": hold.course, "patient": hold.course.patient, "next": nxt})


# --- weekly review worklist ------------------------------------------------------------------------------------------


class ReviewForm(forms.Form):
    course = forms.IntegerField(widget=forms.HiddenInput)
    number = forms.IntegerField(widget=forms.HiddenInput)
    findings = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}))
    weight_kg = forms.DecimalField(max_digits=5, decimal_places=1, required=False, label="Weight (kg)")


@identified("workflow.view_weeklyreview")
def review_worklist(request):
    today = timezone.localdate()
    mine = request.GET.get("mine") == "1"
    rows = tox.reviews_due(today=today, user=request.user, mine=mine)
    return render(request, "workflow/toxicity/reviews.html", {"rows": rows, "today": today, "mine": mine})


@require_POST
@identified("workflow.add_weeklyreview")
def review_complete(request):
    form = ReviewForm(request.POST)
    if not form.is_valid():
        messages.error(request, "Record the review's findings.")
        return redirect(_safe_next(request) or reverse("toxicity-reviews"))
    course = get_object_or_404(Course.objects.active().select_related("patient"), pk=form.cleaned_data["course"])
    try:
        review = tox.complete_review(
            course, number=form.cleaned_data["number"], findings=form.cleaned_data["findings"], weight_kg=form.cleaned_data["weight_kg"], user=request.user
        )
    except SERVICE_ERRORS as exc:
        messages.error(request, f"{course.patient.name}: {service_error_text(exc)}")
    else:
        messages.success(request, f"{course.patient.name}: review {review.number} completed.")
    return redirect(_safe_next(request) or reverse("toxicity-reviews"))
