"""Side-effect pages; the project includes them at the root: ``path("", include("workflow.toxicity.urls"))``."""

from django.urls import path

from . import views

urlpatterns = [
    path("side-effects/new/", views.toxicity_new, name="toxicity-new"),
    path("side-effects/courses/<int:pk>/", views.toxicity_course, name="toxicity-course"),
    path("side-effects/<int:pk>/regrade/", views.toxicity_regrade, name="toxicity-regrade"),
    path("side-effects/<int:pk>/resolve/", views.toxicity_resolve, name="toxicity-resolve"),
    path("side-effects/holds/<int:pk>/decide/", views.hold_decide, name="toxicity-hold-decide"),
    path("side-effects/reviews/", views.review_worklist, name="toxicity-reviews"),
    path("side-effects/reviews/complete/", views.review_complete, name="toxicity-review-complete"),
]
