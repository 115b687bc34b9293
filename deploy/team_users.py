"""Create the team's accounts on an MLflow server running basic-auth (or unlearnops-auth).

Roles are MLflow's own (basic-auth's role API), so a release manager is added or removed with
MLflow's tools, without restarting anything:

  engineer         EDIT on every experiment and registered model: run, register, set @candidate
  release-manager  the same, and the unlearnops-auth app lets its members move @production

Run as the MLflow admin (MLFLOW_TRACKING_USERNAME/PASSWORD of the admin, or --admin-password-file):

  python deploy/team_users.py --tracking-uri http://mlflow:5000 --admin-password-file admin.pw \\
      --state DIR --users alice:engineer rita:release-manager

Each user's password is read from DIR/secrets/NAME.password (team-up.sh generates them). With
--state it also writes DIR/team.json: the server's address and where each secret lives (never
a secret itself), which the team test suite and benchmarks read.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from unlearnops_mlflow_auth import DEFAULT_RELEASE_MANAGER_ROLE

WORKSPACE = "default"  # where basic-auth keeps roles while MLflow workspaces are off
ROLE_GRANTS = {
    "engineer": [("experiment", "*", "EDIT"), ("registered_model", "*", "EDIT")],
    DEFAULT_RELEASE_MANAGER_ROLE: [("experiment", "*", "EDIT"), ("registered_model", "*", "EDIT")],
}


def provision(tracking_uri: str, admin_password: str, users: dict[str, str], passwords: dict[str, str]) -> None:
    from mlflow.server.auth.client import AuthServiceClient

    os.environ["MLFLOW_TRACKING_USERNAME"] = "admin"
    os.environ["MLFLOW_TRACKING_PASSWORD"] = admin_password
    admin = AuthServiceClient(tracking_uri)
    existing = {role.name: role for role in admin.list_roles(WORKSPACE)}
    role_ids = {}
    for name, grants in ROLE_GRANTS.items():
        role = existing.get(name) or admin.create_role(WORKSPACE, name, description=f"unlearnops {name}")
        granted = {(p.resource_type, p.resource_pattern) for p in admin.list_role_permissions(role.id)}
        for resource_type, pattern, permission in grants:
            if (resource_type, pattern) not in granted:
                admin.add_role_permission(role.id, resource_type, pattern, permission)
        role_ids[name] = role.id
    for user, role in users.items():
        if role not in role_ids:
            raise SystemExit(f"--users {user}:{role}: unknown role; use one of {', '.join(role_ids)}")
        admin.create_user(user, passwords[user])
        admin.assign_role(user, role_ids[role])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracking-uri", required=True)
    parser.add_argument("--state", type=Path, required=True, help="team-up.sh's state directory (secrets/ and team.json)")
    parser.add_argument("--users", nargs="+", required=True, metavar="NAME:ROLE")
    parser.add_argument("--mlflow-version", default="")
    parser.add_argument("--postgres-port", type=int, default=None)
    args = parser.parse_args()

    secrets = args.state / "secrets"
    users = dict(entry.split(":", 1) for entry in args.users)
    passwords = {user: (secrets / f"{user}.password").read_text().strip() for user in users}
    provision(args.tracking_uri, (secrets / "admin.password").read_text().strip(), users, passwords)

    team = {
        "tracking_uri": args.tracking_uri,
        "mlflow_version": args.mlflow_version,
        "artifacts_destination": str(args.state / "mlflow" / "artifacts"),
        "users": {
            "admin": {"role": "admin", "password_file": str(secrets / "admin.password")},
            **{user: {"role": role, "password_file": str(secrets / f"{user}.password")} for user, role in users.items()},
        },
    }
    if args.postgres_port:
        # One registry, one audit log: every machine (and every test session) on this server
        # writes the log named here (UNLEARNOPS_AUDIT_URL=<audit_dsn>?log=<audit_log>).
        team["audit_log"] = "team"
        # ... signed with one key (created by the first append, 0600) that every writer uses, and
        # a witness for this machine's checkpoints (docs/team.md).
        team["audit_key"] = str(secrets / "audit" / "audit-signing-key.pem")
        team["audit_witness"] = str(args.state / "witness")
        team["postgres"] = {
            "host": "127.0.0.1",
            "port": args.postgres_port,
            "audit_dsn": f"postgresql://unlearnops@127.0.0.1:{args.postgres_port}/unlearnops",
            "audit_pgpass": str(secrets / "unlearnops.pgpass"),
            "mlflow_dsn": f"postgresql://mlflow@127.0.0.1:{args.postgres_port}/mlflow",
            "mlflow_pgpass": str(secrets / "mlflow.pgpass"),
        }
    (args.state / "team.json").write_text(json.dumps(team, indent=2) + "\n")


if __name__ == "__main__":
    main()
