"""Clinic roles as Django groups, and the permissions each role holds.

A role is a group of the same name; ``sync_role_groups`` (run after every migrate) makes the groups match this
table, so a fresh database and a test database get the same roles. Researchers see no identified patient data:
they hold no ``view_identified`` and reach only de-identified exports and analyses.
"""

from django.contrib.auth.models import Group, Permission

THERAPIST = "therapist"
SCHEDULER = "scheduler"
ONCOLOGIST = "oncologist"
PHYSICIST = "physicist"
DOSIMETRIST = "dosimetrist"
RESEARCHER = "researcher"

CLINICAL_READ = [
    "workflow.view_identified",
    "workflow.view_patient",
    "workflow.view_diagnosis",
    "workflow.view_treatment",
    "workflow.view_course",
    "workflow.view_simulationvisit",
    "workflow.view_fraction",
    "workflow.view_followupvisit",
    "workflow.view_machine",
    "workflow.view_closure",
    "workflow.view_downtime",
    "workflow.view_prescriptionamendment",
]

ROLE_PERMISSIONS = {
    # Therapists deliver fractions and record missed ones (the make-up is appended by the rule, not chosen);
    # booking a course and moving fractions is schedulers' work.
    THERAPIST: CLINICAL_READ + ["workflow.deliver_fraction"],
    SCHEDULER: CLINICAL_READ
    + [
        "workflow.add_patient",  # registration at the front desk
        "workflow.change_patient",
        "workflow.schedule_fraction",
        "workflow.change_fraction",
        "workflow.add_simulationvisit",
        "workflow.change_simulationvisit",
        "workflow.add_downtime",
        "workflow.manage_downtime",
        "workflow.add_closure",
        "workflow.change_followupvisit",
    ],
    ONCOLOGIST: CLINICAL_READ
    + [
        "workflow.add_patient",
        "workflow.change_patient",
        "workflow.add_diagnosis",
        "workflow.change_diagnosis",
        "workflow.add_treatment",
        "workflow.change_treatment",
        "workflow.add_course",
        "workflow.change_course",
        "workflow.add_prescriptionamendment",
        "workflow.approve_course",
        "workflow.stop_course",
        "workflow.add_simulationvisit",
        "workflow.change_simulationvisit",
        "workflow.change_followupvisit",
    ],
    PHYSICIST: CLINICAL_READ + ["workflow.add_downtime", "workflow.manage_downtime"],
    DOSIMETRIST: CLINICAL_READ,
    RESEARCHER: [],
}

ROLES = list(ROLE_PERMISSIONS)


def extend_role(role, perms):
    """Let another app (planning, outcomes) add its own permissions to a role before groups are synced."""
    ROLE_PERMISSIONS[role] = list(dict.fromkeys(ROLE_PERMISSIONS[role] + list(perms)))


def _permission(label):
    app_label, codename = label.split(".")
    return Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()


ROLE_APPS = {"workflow", "planning", "outcomes"}
"""Apps whose permissions roles hold; each one's post_migrate re-syncs the groups."""


def sync_role_groups(sender=None, **kwargs):
    """Make the role groups match ROLE_PERMISSIONS.

    Connected to every post_migrate: for a project app it first creates that app's permissions (Django's own
    receiver may run later), so roles never silently miss the permissions of an app migrated after workflow.
    """
    if sender is not None:
        if getattr(sender, "name", None) not in ROLE_APPS:
            return
        from django.apps import apps as global_apps
        from django.contrib.auth.management import create_permissions

        create_permissions(sender, verbosity=0, using=kwargs.get("using") or "default", apps=kwargs.get("apps") or global_apps)
    for role, labels in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        perms = [p for p in (_permission(label) for label in labels) if p is not None]
        group.permissions.set(perms)


def user_roles(user):
    """The user's clinic roles (group names), read once per user object (like Django's permission cache), so a
    page checking the role of every row of a worklist asks the database once."""
    if not user.is_authenticated:
        return set()
    cached = getattr(user, "_radpath_roles", None)
    if cached is None:
        cached = user._radpath_roles = frozenset(user.groups.values_list("name", flat=True))
    return set(cached)
