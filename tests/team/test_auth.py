"""Authentication and authorisation on the team server, checked at the server with MLflow's own
client (not through unlearnops, which a person with credentials need not use).

MLflow's basic-auth lets anyone with EDIT on a model set any of its aliases, so @production is
guarded by the unlearnops-auth app (deploy/mlflow-auth): these tests are what shows it holds for
every route that can move an alias.
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request

import pytest


def _rest(team, path: str, *, user: str | None = None, password: str | None = None, body: dict | None = None, method: str = "GET"):
    """(status, body text) of a raw REST call: what a client that is not MLflow's sends."""
    request = urllib.request.Request(team.tracking_uri + path, method=method, data=json.dumps(body).encode() if body else None)
    request.add_header("Content-Type", "application/json")
    if user is not None:
        token = base64.b64encode(f"{user}:{password if password is not None else team.password(user)}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode(errors="replace")


@pytest.fixture
def admin_cleanup(team, as_user):
    """Registered models to delete (as admin) after the test, so the session's registry holds only
    what unlearnops registered (the flow test cross-checks every version against the audit log)."""
    names: list[str] = []
    yield names
    from mlflow import MlflowClient

    as_user("admin")
    admin = MlflowClient(team.tracking_uri, team.tracking_uri)
    for name in names:
        try:
            admin.delete_registered_model(name)
        except Exception:
            pass


@pytest.fixture
def model_with_versions(team, as_user, unique, admin_cleanup):
    """alice's registered model with two versions of one run; returns (name, client factory)."""
    from mlflow import MlflowClient

    name = f"auth-{unique}"
    admin_cleanup.append(name)
    as_user("alice")
    alice = MlflowClient(team.tracking_uri, team.tracking_uri)
    experiment = alice.get_experiment_by_name("team-auth-tests") or None
    experiment_id = experiment.experiment_id if experiment else _create_experiment(alice)
    run = alice.create_run(experiment_id)
    alice.create_registered_model(name)
    for _ in range(2):
        alice.create_model_version(name, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)

    def client_of(user: str):
        as_user(user)
        return MlflowClient(team.tracking_uri, team.tracking_uri)

    return name, client_of


def _create_experiment(client) -> str:
    try:
        return client.create_experiment("team-auth-tests")
    except Exception:  # created by a concurrent test
        return client.get_experiment_by_name("team-auth-tests").experiment_id


@pytest.mark.parametrize("path", [
    "/api/2.0/mlflow/registered-models/search",
    "/api/2.0/mlflow/experiments/search?max_results=10",
    "/api/2.0/mlflow/model-versions/search",
    "/api/2.0/mlflow-artifacts/artifacts",
])
def test_anonymous_and_wrong_password_requests_are_refused(team, path):
    status, _ = _rest(team, path)
    assert status == 401, f"anonymous {path} answered {status}"
    status, _ = _rest(team, path, user="alice", password="not-her-password")
    assert status == 401, f"a wrong password on {path} answered {status}"
    status, _ = _rest(team, path, user="nobody", password="x")
    assert status == 401
    status, _ = _rest(team, path, user="alice")
    # Authenticated: the searches answer; the artifact root needs an experiment's path (403, not 401).
    assert status == (403 if "artifacts" in path else 200), f"alice on {path} answered {status}"


def test_an_engineer_registers_and_sets_candidate_but_the_server_refuses_production(model_with_versions):
    name, client_of = model_with_versions
    alice = client_of("alice")
    alice.set_registered_model_alias(name, "candidate", "2")
    with pytest.raises(Exception, match="PERMISSION_DENIED") as refused:
        alice.set_registered_model_alias(name, "production", "1")
    assert "release-manager" in str(refused.value)  # the refusal says who may
    assert alice.get_registered_model(name).aliases == {"candidate": "2"}
    bob = client_of("bob")  # an engineer who did not create the model (and so holds no MANAGE on it)
    bob.create_model_version(name, source=alice_source(alice, name), run_id=alice.get_model_version(name, "1").run_id)
    with pytest.raises(Exception, match="PERMISSION_DENIED"):
        bob.set_registered_model_alias(name, "production", "3")


def alice_source(client, name: str) -> str:
    return client.get_model_version(name, "1").source


def test_only_a_release_manager_or_admin_moves_production_and_no_route_around_it_is_open(model_with_versions):
    name, client_of = model_with_versions
    rita = client_of("rita")
    rita.set_registered_model_alias(name, "production", "1")
    assert rita.get_registered_model(name).aliases == {"production": "1"}

    # Every route that changes what @production resolves to, tried by the model's creator
    # (who basic-auth made MANAGE on it, so only the unlearnops-auth rule stands in the way).
    alice = client_of("alice")
    attempts = {
        "set": lambda: alice.set_registered_model_alias(name, "production", "2"),
        "delete alias": lambda: alice.delete_registered_model_alias(name, "production"),
        "delete its version": lambda: alice.delete_model_version(name, "1"),
        "rename the model": lambda: alice.rename_registered_model(name, name + "-renamed"),
        "delete the model": lambda: alice.delete_registered_model(name),
    }
    for label, attempt in attempts.items():
        with pytest.raises(Exception, match="PERMISSION_DENIED"):
            attempt()
    assert client_of("rita").get_registered_model(name).aliases == {"production": "1"}
    assert {v.version for v in client_of("alice").search_model_versions(f"name = '{name}'")} == {"1", "2"}

    # What does not touch @production stays allowed: the rule is narrow.
    alice = client_of("alice")
    alice.set_registered_model_alias(name, "candidate", "2")
    alice.delete_registered_model_alias(name, "candidate")
    alice.delete_model_version(name, "2")

    client_of("rita").set_registered_model_alias(name, "production", "1")
    admin = client_of("admin")
    admin.delete_registered_model_alias(name, "production")
    assert admin.get_registered_model(name).aliases == {}


def test_the_rule_holds_for_a_raw_rest_call_too(team, model_with_versions):
    """No client-side check is involved: the request a script would send by hand is refused."""
    name, _ = model_with_versions
    status, body = _rest(team, "/api/2.0/mlflow/registered-models/alias", user="bob", method="POST",
                         body={"name": name, "alias": "production", "version": "1"})
    assert status == 403 and "PERMISSION_DENIED" in body
    status, body = _rest(team, "/ajax-api/2.0/mlflow/registered-models/alias", user="bob", method="POST",
                         body={"name": name, "alias": "production", "version": "1"})
    assert status == 403, f"the UI's ajax route answered {status}"
    status, _ = _rest(team, "/api/2.0/mlflow/registered-models/alias", user="rita", method="POST",
                      body={"name": name, "alias": "production", "version": "1"})
    assert status == 200


def test_credentials_come_from_the_environment_or_the_mlflow_credentials_file(team, tmp_path, monkeypatch, cli, workspace):
    """MLFLOW_TRACKING_USERNAME/PASSWORD, else ~/.mlflow/credentials (MLflow's netrc-style file)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", team.tracking_uri)
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    refused = cli("models", "--json")
    assert refused.exit_code == 1 and "Traceback" not in refused.stderr
    assert "401" in refused.stderr and "MLFLOW_TRACKING_USERNAME" in refused.stderr, refused.stderr  # says what to set

    credentials = tmp_path / ".mlflow" / "credentials"
    credentials.parent.mkdir()
    credentials.write_text(f"[mlflow]\nmlflow_tracking_username = bob\nmlflow_tracking_password = {team.password('bob')}\n")
    credentials.chmod(0o600)
    listed = cli("models", "--json")
    assert listed.exit_code == 0, listed
    assert isinstance(json.loads(listed.stdout), list)
    assert team.password("bob") not in listed.stdout + listed.stderr
