"""`mlflow server --app-name unlearnops-auth`: MLflow's basic-auth app plus protected aliases.

Why this exists: in MLflow 3.17.2's basic-auth, setting or deleting a registered-model alias
needs only EDIT on the model (`validate_can_set_model_or_prompt_version_alias` =
`can_update` + read on its versions), the same permission that creating a version needs. So
anyone who can register a model can also move its `@production`, and the creator of a model
is even granted MANAGE on it. Basic-auth has no per-alias permission.

This app runs basic-auth unchanged (same users, permissions, roles, login) and adds one
before-request rule after basic-auth has authenticated and authorised the request: a request
that would move a protected alias (default `production`) is refused with 403 unless the caller
is an MLflow admin or holds the release-manager role. "Move" covers every route that changes
what the alias resolves to:

- set or delete the alias itself;
- delete the model version it points to (the alias goes with it);
- delete or rename the registered model that carries it.

Server-side configuration (environment of `mlflow server`):
  UNLEARNOPS_PROTECTED_ALIASES     comma-separated aliases (default: production)
  UNLEARNOPS_RELEASE_MANAGER_ROLE  the basic-auth role whose members may move them
                                   (default: release-manager; create it and assign users with
                                   MLflow's role API, see deploy/team_users.py)
"""

from __future__ import annotations

import os
from collections.abc import Callable

from flask import Flask, Response, jsonify, request

PROTECTED_ALIASES_ENV = "UNLEARNOPS_PROTECTED_ALIASES"
RELEASE_MANAGER_ROLE_ENV = "UNLEARNOPS_RELEASE_MANAGER_ROLE"
DEFAULT_PROTECTED_ALIASES = ("production",)
DEFAULT_RELEASE_MANAGER_ROLE = "release-manager"


def protected_aliases() -> frozenset[str]:
    configured = os.environ.get(PROTECTED_ALIASES_ENV)
    names = configured.split(",") if configured else DEFAULT_PROTECTED_ALIASES
    return frozenset(name.strip() for name in names if name.strip())


def release_manager_role() -> str:
    return os.environ.get(RELEASE_MANAGER_ROLE_ENV) or DEFAULT_RELEASE_MANAGER_ROLE


# ---- which aliases a request would move -------------------------------------------------------
def _params() -> dict:
    body = request.get_json(silent=True)  # POST/PATCH bodies; DELETE may send either
    params = dict(request.args)
    if isinstance(body, dict):
        params.update(body)
    return params


def _model_aliases(name: str) -> dict[str, str]:
    """alias -> version of a registered model; {} when it does not exist (MLflow answers that)."""
    from mlflow.exceptions import MlflowException
    from mlflow.server.handlers import _get_model_registry_store

    try:
        model = _get_model_registry_store().get_registered_model(name)
    except MlflowException:
        return {}
    return {alias: str(version) for alias, version in (model.aliases or {}).items()}


def _the_alias(params: dict) -> set[str]:
    return {str(params.get("alias", ""))}


def _aliases_of_version(params: dict) -> set[str]:
    aliases = _model_aliases(str(params.get("name", "")))
    return {alias for alias, version in aliases.items() if version == str(params.get("version", ""))}


def _aliases_of_model(params: dict) -> set[str]:
    return set(_model_aliases(str(params.get("name", ""))))


def _moved_aliases_by_route() -> dict[tuple[str, str], Callable[[dict], set[str]]]:
    """(path, method) -> the aliases that request would move, for every REST/ajax path of each."""
    from mlflow.protos.model_registry_pb2 import (
        DeleteModelVersion,
        DeleteRegisteredModel,
        DeleteRegisteredModelAlias,
        RenameRegisteredModel,
        SetRegisteredModelAlias,
    )
    from mlflow.server.handlers import get_endpoints

    moved_by = {
        SetRegisteredModelAlias: _the_alias,
        DeleteRegisteredModelAlias: _the_alias,
        DeleteModelVersion: _aliases_of_version,
        DeleteRegisteredModel: _aliases_of_model,
        RenameRegisteredModel: _aliases_of_model,
    }
    # get_endpoints(selector) hands each route's request class to the selector; the identity
    # selector gives (path, request class, methods), the same table MLflow's own auth uses.
    return {
        (path, method): moved_by[request_class]
        for path, request_class, methods in get_endpoints(lambda request_class: request_class)
        if request_class in moved_by
        for method in methods
    }


# ---- who may move them ------------------------------------------------------------------------
def is_release_manager(username: str) -> bool:
    from mlflow.server.auth import store

    user = store.get_user(username)
    if user.is_admin:
        return True
    role = release_manager_role()
    return any(assigned.name == role for assigned in store.list_user_roles(user.id))


def _refusal(username: str, aliases: set[str], name: str) -> Response:
    listed = ", ".join(f"@{alias}" for alias in sorted(aliases))
    response = jsonify(
        error_code="PERMISSION_DENIED",
        message=(
            f"user '{username}' may not move {listed} of model '{name}': only MLflow admins and members of the "
            f"'{release_manager_role()}' role can (protected aliases: {', '.join(sorted(protected_aliases()))}); "
            "ask a release manager to promote it"
        ),
    )
    response.status_code = 403
    return response


def _guard(routes: dict[tuple[str, str], Callable[[dict], set[str]]], protected: frozenset[str]):
    def guard_protected_aliases() -> Response | None:
        moved = routes.get((request.path, request.method))
        if moved is None:
            return None
        params = _params()
        touched = moved(params) & protected
        if not touched:
            return None
        from mlflow.server.auth import authenticate_request

        # Basic-auth's before-request ran first and let the request through, so this is an
        # authenticated user (re-checked here rather than trusting request.authorization).
        authorization = authenticate_request()
        if isinstance(authorization, Response):
            return authorization
        if is_release_manager(authorization.username):
            return None
        return _refusal(authorization.username, touched, str(params.get("name", "")))

    return guard_protected_aliases


def create_app(app: Flask | None = None):
    """MLflow's basic-auth app with the protected-alias rule registered after its own checks."""
    from mlflow.server import app as mlflow_flask_app
    from mlflow.server.auth import create_app as basic_auth_app

    flask_app = app or mlflow_flask_app
    served = basic_auth_app(flask_app)  # registers basic-auth's before_request first
    flask_app.before_request(_guard(_moved_aliases_by_route(), protected_aliases()))
    return served
