"""The registry's identity: tags of the `unlearnops` experiment that bind a registry to one audit log."""

REGISTRY_ID_TAG = "unlearnops.registry_id"  # a random id, set once: which registry this is
LOG_ID_TAG = "unlearnops.audit.log_id"  # the audit log whose evidence this registry holds
PUBLIC_KEY_TAG = "unlearnops.audit.public_key"  # that log's public key (C2SP verifier key) ...
FINGERPRINT_TAG = "unlearnops.audit.key_fingerprint"  # ... and its SHA-256 fingerprint
CHECKPOINT_TAG = "unlearnops.audit.checkpoint"  # the log's latest signed checkpoint: a second witness
