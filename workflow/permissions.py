"""API permission: every request needs login, and each view names the permission an action needs.

A viewset sets ``required_perms`` mapping an action name (or ``"read"`` / ``"write"`` for the defaults) to a
permission label or a list of them. Superusers pass; anyone else needs all the listed permissions.
"""

from rest_framework.permissions import SAFE_METHODS, BasePermission


class RolePermission(BasePermission):
    message = "Your role does not allow this."

    def has_permission(self, request, view):
        user = request.user
        if not (user and user.is_authenticated):
            return False
        required = getattr(view, "required_perms", None)
        if required is None:
            return True
        action = getattr(view, "action", None)
        perms = required.get(action)
        if perms is None:
            perms = required.get("read" if request.method in SAFE_METHODS else "write")
        if perms is None:
            return user.is_superuser
        if isinstance(perms, str):
            perms = [perms]
        return user.has_perms(perms)
