"""Care-path pages; include at the site root: ``path("", include("workflow.carepaths.urls"))``."""

from django.urls import path

from . import views

urlpatterns = [
    path("carepaths/worklist/", views.worklist, name="carepath-worklist"),
    path("carepaths/board/", views.board, name="carepath-board"),
    path("carepaths/board/timing.png", views.board_chart, name="carepath-board-chart"),
    path("carepaths/<int:pk>/", views.path_detail, name="carepath-detail"),
    path("carepaths/tasks/<int:pk>/<slug:action>/", views.task_action, name="carepath-task-action"),
]
