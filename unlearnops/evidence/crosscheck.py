"""Registry and log, both ways: every disagreement named by version, alias or record.

- The registry is the one the log was written with (its identity tags), holding this log's id
  and public key.
- Every version of a model unlearnops manages (a name in a registration or alias record), and
  every version anywhere carrying an `unlearnops.*` tag, has exactly one signed registration
  record; its model hash, gate, request ids and audit_head tags agree with that record.
- Every registration record has its version in the registry (not deleted outside unlearnops).
- Every alias of a managed model points where its last `alias.moved` record says, and every
  alias record's alias still exists.
"""

from __future__ import annotations

import json
from collections import defaultdict

from .. import audit, registry
from .tags import FINGERPRINT_TAG, LOG_ID_TAG, REGISTRY_ID_TAG

_DOMAIN_TAG = "unlearnops."


def cross_check(evidence, records: list[dict], identity: dict[str, str], result: audit.VerifyResult) -> None:
    uri = evidence.tracking_uri
    where = f"registry {registry.redact(uri)}"
    bound = evidence._bound_registry(records)
    if bound is not None and identity.get(REGISTRY_ID_TAG) != bound["registry_id"]:
        found = identity.get(REGISTRY_ID_TAG) or "a registry without unlearnops's identity (new, replaced or missing)"
        result.add(where, f"is {found}, not registry {bound['registry_id']} that this log was written with (record of registry.bound)")
        return  # another registry's versions would only list noise
    if identity.get(LOG_ID_TAG) and result.log_id and identity[LOG_ID_TAG] != result.log_id:
        result.add(where, f"holds the evidence of audit log {identity[LOG_ID_TAG]}, not of this log {result.log_id}")
    if identity.get(FINGERPRINT_TAG) and result.key_fingerprint and identity[FINGERPRINT_TAG] != result.key_fingerprint:
        result.add(where, f"names audit key {identity[FINGERPRINT_TAG][:16]}…, not this log's key {result.key_fingerprint[:16]}…")

    registrations: dict[tuple[str, str], list[dict]] = defaultdict(list)
    moves: dict[tuple[str, str], dict] = {}
    for record in records:
        fields = record["fields"]
        if record["event"] == audit.VERSION_REGISTERED:
            registrations[(str(fields["name"]), str(fields["version"]))].append(record)
        elif record["event"] == audit.ALIAS_MOVED:
            moves[(str(fields["name"]), str(fields["alias"]))] = record
    managed = {name for name, _ in registrations} | {name for name, _ in moves}

    if not registry.store_exists(uri):
        if registrations:
            result.add(where, f"does not exist, but the log registered {len(registrations)} version(s) in it (deleted or moved)")
        return
    versions = [v for v in registry.list_versions(tracking_uri=uri) if v.name in managed or any(k.startswith(_DOMAIN_TAG) for k in v.tags)]
    result.versions_checked = len(versions)
    present = set()
    for version in versions:
        present.add((version.name, version.version))
        _check_version(version, registrations.get((version.name, version.version), []), result)
    for (name, number), found in sorted(registrations.items()):
        if (name, number) not in present:
            result.add(f"version {name}/{number}", f"registered (record {found[0]['seq']}) but not in the registry: deleted outside unlearnops")
    _check_aliases(versions, moves, managed, result)


def _check_version(version: registry.RegisteredVersion, found: list[dict], result: audit.VerifyResult) -> None:
    where = f"version {version.name}/{version.version}"
    if not found:
        result.add(where, "has no signed registration record: created outside unlearnops (or its record was removed)")
        return
    if len(found) > 1:
        result.add(where, f"has {len(found)} registration records (seq {', '.join(str(r['seq']) for r in found)})")
    record = found[0]
    fields, tags, seq = record["fields"], version.tags, record["seq"]
    expected = {
        registry.TAG_MODEL_SHA: fields["model_sha256"],
        registry.TAG_AUDIT_HEAD: record["hash"],
        registry.TAG_GATE: "passed" if fields["gate_passed"] is True else "failed",
    }
    for tag, value in expected.items():
        if tag not in tags:
            result.add(where, f"its {tag} tag was deleted (the signed record {seq} says {value[:16]})")
        elif tags[tag] != value:
            result.add(where, f"its {tag} tag is {tags[tag][:16]!r}, the signed record {seq} says {value[:16]!r}: tag edited")
    for problem in version.tag_problems():
        result.add(where, f"registry inconsistency: {problem}")
    claimed = _json_list(tags.get(registry.TAG_REQUEST_IDS))
    if claimed is not None and sorted(set(claimed)) != sorted(audit.request_ids_of(fields)):
        result.add(where, f"its {registry.TAG_REQUEST_IDS} tag claims {sorted(set(claimed))}, the signed record {seq} {sorted(audit.request_ids_of(fields))}")


def _check_aliases(versions, moves: dict[tuple[str, str], dict], managed: set[str], result: audit.VerifyResult) -> None:
    in_registry = {(v.name, alias): v.version for v in versions for alias in v.aliases if v.name in managed}
    models = {v.name for v in versions}
    for key in sorted(set(in_registry) | set(moves)):
        name, alias = key
        where = f"alias {name}@{alias}"
        record = moves.get(key)
        logged = str(record["fields"]["version"]) if record else None
        actual = in_registry.get(key)
        if record is None:
            result.add(where, f"points at version {actual} but no alias.moved record set it: moved outside unlearnops")
        elif actual is None:
            if name in models:
                result.add(where, f"is gone from the registry; its last alias.moved record ({record['seq']}) set it to version {logged}")
        elif actual != logged:
            result.add(where, f"points at version {actual}; its last alias.moved record ({record['seq']}) says version {logged}: moved outside unlearnops")


def _json_list(value: str | None) -> list | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None  # reported by tag_problems()
    return parsed if isinstance(parsed, list) else None
