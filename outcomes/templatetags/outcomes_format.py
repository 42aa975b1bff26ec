"""Number formats of the outcome pages."""

import math

from django import template

register = template.Library()


@register.filter
def pvalue(p, digits=4):
    """A p value to ``digits`` decimals as the tables print it; below the last decimal "< 0.0001" (never "0.0000",
    which reads as "no chance at all"); missing or not finite: "—"."""
    try:
        p, digits = float(p), int(digits)
    except (TypeError, ValueError):
        return "—"
    if not math.isfinite(p):
        return "—"
    floor = 10 ** -digits
    return f"< {floor:.{digits}f}" if p < floor else f"{p:.{digits}f}"


@register.filter
def p_is(p, digits=4):
    """The p value in a sentence: "= 0.0034", or "< 0.0001" (not "= < 0.0001")."""
    shown = pvalue(p, digits)
    return shown if shown.startswith("<") or shown == "—" else f"= {shown}"


@register.filter
def months(days):
    """Days as months (1 month = 30.4375 days, as the plots and tables), one decimal."""
    from outcomes.endpoints import DAYS_PER_MONTH

    try:
        return f"{float(days) / DAYS_PER_MONTH:.1f}"
    except (TypeError, ValueError):
        return "—"
