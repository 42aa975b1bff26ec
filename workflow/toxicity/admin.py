"""Admin for the toxicity records: history one click away; clinical records, so never deleted here, voided instead."""

from django.contrib import admin

from ..pathway.admin import ClinicalAdmin, VoidedListFilter
from .models import CourseHold, ToxicityEvent, WeeklyReview


@admin.register(ToxicityEvent)
class ToxicityEventAdmin(ClinicalAdmin):
    list_filter = (VoidedListFilter,)


@admin.register(CourseHold)
class CourseHoldAdmin(ClinicalAdmin):
    list_filter = (VoidedListFilter,)


@admin.register(WeeklyReview)
class WeeklyReviewAdmin(ClinicalAdmin):
    list_filter = (VoidedListFilter,)
