"""Template tags that show side-effect alerts on other apps' pages.

``{% load toxicity %}`` then:
- ``{% toxicity_alerts course %}``: banner for an open treatment hold (with the decision link for oncologists) and
  the course's unresolved events at or above the hold grade.
- ``{% patient_toxicity_alerts patient %}``: the same for every course of the patient.
- ``{% hold_badge course %}``: a small "On hold" badge (e.g. in today's treatment list rows).
- ``{% log_side_effect_link course %}`` / ``{% log_side_effect_link patient=patient %}``: the quick-entry link
  (shown only to users who may log side effects); it returns to the current page.
"""

from django import template
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from workflow.toxicity import services as tox
from workflow.pathway.models import Course
from workflow.toxicity.models import ToxicityEvent

register = template.Library()


def _url(name, *args):
    try:
        return reverse(name, args=args)
    except NoReverseMatch:  # the side-effect pages are not mounted in this URLconf
        return ""


def _severe_events(course):
    events = ToxicityEvent.objects.active().filter(course=course, resolved_date__isnull=True, baseline=False)
    return [e for e in events if e.grade >= tox.hold_grade(e.term)]


def _alerts_context(context, courses):
    request = context.get("request")
    user = getattr(request, "user", None)
    items = []
    for course in courses:
        hold = tox.open_hold(course)
        severe = _severe_events(course)
        if hold or severe:
            items.append({
                "course": course,
                "hold": hold,
                "severe": severe,
                "decide_url": _url("toxicity-hold-decide", hold.pk) if hold else "",
                "course_url": _url("toxicity-course", course.pk),
            })
    return {
        "items": items,
        "can_decide": bool(user and user.has_perm("workflow.decide_hold")),
        "next": request.get_full_path() if request else "",
    }


@register.inclusion_tag("workflow/toxicity/_alerts.html", takes_context=True)
def toxicity_alerts(context, course):
    return _alerts_context(context, [course])


@register.inclusion_tag("workflow/toxicity/_alerts.html", takes_context=True)
def patient_toxicity_alerts(context, patient):
    return _alerts_context(context, Course.objects.active().filter(patient=patient))


@register.simple_tag
def hold_badge(course):
    hold = tox.open_hold(course)
    if hold is None:
        return ""
    return format_html(
        '<span class="badge tox-hold" style="background:#fde8ea;color:#a3111f" title="Toxicity hold: {}" data-toxicity-hold="{}">On hold</span>',
        hold.reason, course.pk,
    )


@register.simple_tag(takes_context=True)
def log_side_effect_link(context, course=None, patient=None, label="Log side effect"):
    request = context.get("request")
    user = getattr(request, "user", None)
    if not (user and user.has_perm("workflow.add_toxicityevent")):
        return ""
    base = _url("toxicity-new")
    if not base:
        return ""
    if course is not None:
        query = f"course={course.pk}"
        name = course.patient.name
    elif patient is not None:
        if not Course.objects.active().filter(patient=patient).exists():
            return ""
        query = f"patient={patient.pk}"
        name = patient.name
    else:
        return ""
    nxt = request.get_full_path() if request else ""
    from urllib.parse import quote

    return format_html('<a class="button" href="{}?{}&amp;next={}" aria-label="{}: {}">{}</a>', base, query, quote(nxt), label, name, label)


@register.simple_tag(takes_context=True)
def hold_decide_link(context, course, label="Decide on hold"):
    """For oncologists: the link to record the decision on the course's open hold (empty when none)."""
    request = context.get("request")
    user = getattr(request, "user", None)
    hold = tox.open_hold(course)
    if hold is None or not (user and user.has_perm("workflow.decide_hold")):
        return ""
    url = _url("toxicity-hold-decide", hold.pk)
    if not url:
        return ""
    from urllib.parse import quote

    nxt = request.get_full_path() if request else ""
    return format_html('<a class="button" href="{}?next={}" aria-label="{}: {}">{}</a>', url, quote(nxt), label, course.patient.name, label)
