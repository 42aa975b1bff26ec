"""Pathway events other apps listen to (care-path tasks complete themselves on these)."""

from django.dispatch import Signal

simulation_completed = Signal()  # visit, user
course_cleared = Signal()  # course, user
fraction_delivered = Signal()  # fraction, user
course_completed = Signal()  # course, user
course_stopped = Signal()  # course, user
