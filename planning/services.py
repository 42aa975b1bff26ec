"""The planning app's service interface: what its views, API, tasks and other apps call.

Each concern has its own module; this one re-exports their public functions so callers keep one import
(``from planning import services``):

- ``planning.protocols``: site protocols (TG-119 / QUANTEC defaults, alpha/beta per organ), validation of
  objectives and goals;
- ``planning.geometry``: media files, the plan's geometry (phantom or imported CT), its primary target;
- ``planning.plans``: creating plans, drafts and versions (``planning.run_plan``);
- ``planning.jobs``: the background job's lifecycle, heartbeat and the reaper of lost workers;
- ``planning.results``: the stored accurate dose, DVHs, structure metrics and the dose-model statement;
- ``planning.approval``: approval and rejection (``planning.approve_plan``), the course's current plan;
- ``planning.delivered``: planned vs delivered dose per structure, re-irradiation EQD2 sums.

Module dependencies run one way: protocols, geometry <- plans <- jobs; geometry <- results <- jobs;
plans <- approval; protocols <- delivered.
"""

from .approval import (  # noqa: F401
    approve_plan,
    current_plan,
    reject_plan,
)
from .delivered import (  # noqa: F401
    DOSE_METRICS,
    EQD2_METRICS,
    alpha_beta_for,
    course_dose,
    eqd2,
    reirradiation_summary,
)
from .geometry import (  # noqa: F401
    geometry_structures,
    load_geometry,
    media_path,
    plans_dir,
    primary_target,
    save_npz,
)
from .jobs import (  # noqa: F401
    CORRECTION_ROUNDS,
    PLAN_TASK_PATH,
    SEGMENT_WEIGHT_MAX_ITER,
    SEQUENCING_LEVELS,
    WORKER_LOST,
    WorkerLost,
    cancel_plan,
    compute_plan,
    execute_plan,
    heartbeat_seconds,
    plan_status,
    progress_text,
    reap_lost_rq_jobs,
    reap_lost_task_rows,
    reap_stale_plans,
    retry_plan,
    segment_arrays_of,
    stale_after_seconds,
    start_plan,
)
from .plans import (  # noqa: F401
    INPUT_FIELDS,
    clear_result,
    create_plan,
    new_version,
    next_version,
    require_permission,
    update_plan,
)
from .protocols import (  # noqa: F401
    DEFAULT_ALPHA_BETA,
    DEFAULT_GANTRIES,
    LATE_ALPHA_BETA,
    SITE_PROTOCOLS,
    TARGET_ALPHA_BETA,
    check_number,
    default_goals,
    default_objectives,
    site_protocol,
    validate_goals,
    validate_objectives,
)
from .results import (  # noqa: F401
    dose_model_statement,
    dvh_rows,
    load_dose,
    store_result,
)
