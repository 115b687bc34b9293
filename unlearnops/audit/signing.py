"""The audit log's Ed25519 key and the C2SP signed-note checkpoints it signs.

The key is the operator's secret; it lives outside the workspace (and outside the directory of
the log), so write access to the workspace is not the power to sign:

    $UNLEARNOPS_AUDIT_KEY             the private key file (PEM, PKCS#8), created on first use
                                      with mode 0600 (its directory 0700)
    default                           $XDG_CONFIG_HOME/unlearnops/audit-signing-key.pem
                                      (~/.config/unlearnops/audit-signing-key.pem)
    $UNLEARNOPS_AUDIT_PUBLIC_KEY      for a verifier without the private key: the public key as a
                                      C2SP verifier key (`name+keyid+base64`), or a file holding it

Verification never creates a key: it checks against the configured key (or public key), never
against the key a log names for itself.

A checkpoint is a C2SP tlog-checkpoint (https://c2sp.org/tlog-checkpoint) in a signed note
(https://c2sp.org/signed-note): origin line, size, base64 of the head hash, a blank line, then
`— <key name> <base64(key id || Ed25519 signature)>`. The "root hash" is the hash of the log's
last record (the head of a hash chain, which commits to every record before it), not a Merkle
root: a verifier holds the whole log and recomputes the chain instead of asking for proofs.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from ..errors import UnlearnopsError

KEY_ENV = "UNLEARNOPS_AUDIT_KEY"
PUBLIC_KEY_ENV = "UNLEARNOPS_AUDIT_PUBLIC_KEY"
KEY_NAME = "unlearnops.audit"
ORIGIN_PREFIX = "unlearnops.audit/"
RECORD_DOMAIN = b"unlearnops.audit-record/v1\n"
_ED25519 = b"\x01"  # the signed-note signature type of Ed25519
_EM_DASH = "\u2014 "


def default_key_path() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "unlearnops" / "audit-signing-key.pem"


def key_path() -> Path:
    return Path(os.environ.get(KEY_ENV) or default_key_path()).expanduser()


# ---- keys -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PublicKey:
    raw: bytes  # the 32-byte Ed25519 public key

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the raw public key, hex: what the log, the registry and reports print."""
        return hashlib.sha256(self.raw).hexdigest()

    @property
    def key_id(self) -> bytes:
        """The signed-note key id: SHA-256(name || 0x0A || 0x01 || key)[:4]."""
        return hashlib.sha256(KEY_NAME.encode() + b"\n" + _ED25519 + self.raw).digest()[:4]

    @property
    def vkey(self) -> str:
        """The signed-note verifier key, `name+keyid+base64(0x01 || key)` (Go's sumdb/note format)."""
        return f"{KEY_NAME}+{self.key_id.hex()}+{base64.b64encode(_ED25519 + self.raw).decode()}"

    @classmethod
    def from_vkey(cls, text: str) -> "PublicKey":
        parts = text.strip().split("+", 2)  # base64 may itself hold "+"
        try:
            name, key_id, encoded = parts
            decoded = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise UnlearnopsError(f"public key '{text[:80]}': not a verifier key (name+keyid+base64)") from None
        if name != KEY_NAME or len(decoded) != 33 or decoded[:1] != _ED25519:
            raise UnlearnopsError(f"public key '{text[:80]}': not an {KEY_NAME} Ed25519 verifier key")
        key = cls(decoded[1:])
        if key.key_id.hex() != key_id:
            raise UnlearnopsError(f"public key '{text[:80]}': its key id does not match the key")
        return key

    def verifies(self, signature: bytes, message: bytes) -> bool:
        from cryptography.exceptions import InvalidSignature

        try:
            _ed25519(self.raw).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


@functools.lru_cache(maxsize=8)
def _ed25519(raw: bytes):
    """The cryptography key object, built once per key: verify checks thousands of signatures."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    return Ed25519PublicKey.from_public_bytes(raw)


class SigningKey:
    def __init__(self, private_key, path: Path | None = None):
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        self._private = private_key
        self.path = path
        self.public = PublicKey(private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)

    @classmethod
    def generate(cls) -> "SigningKey":
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        return cls(Ed25519PrivateKey.generate())


def _key_error(message: str) -> UnlearnopsError:
    return UnlearnopsError(message, field=f"${KEY_ENV}")


def load_signing_key(*, forbidden_dir: Path | None = None, create: bool = True) -> SigningKey:
    """The operator's key ($UNLEARNOPS_AUDIT_KEY or the default path), created on first use.

    `forbidden_dir` is the directory that holds the log: a key inside it would be readable by
    whoever can rewrite the log, which is the attacker the key exists to stop.
    """
    path = key_path()
    _refuse_inside(path, forbidden_dir, what=f"audit signing key {path}", fix=f"set ${KEY_ENV} to a path outside it")
    if not path.exists():
        if not create:
            raise _key_error(f"audit signing key {path}: not found; set ${KEY_ENV} to the key that signs this log")
        return _create_key(path)
    return _read_key(path)


def _create_key(path: Path) -> SigningKey:
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    key = SigningKey.generate()
    pem = key._private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key(path)  # another process created it first: use that one
    except OSError as err:
        raise _key_error(f"audit signing key {path}: cannot create it ({err.strerror}); set ${KEY_ENV} to a writable path") from None
    try:
        os.write(descriptor, pem)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    return SigningKey(key._private, path)


def _read_key(path: Path) -> SigningKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        mode = path.stat().st_mode
    except OSError as err:
        raise _key_error(f"audit signing key {path}: cannot read it ({err.strerror})") from None
    if not stat.S_ISREG(mode):
        raise _key_error(f"audit signing key {path}: not a regular file; set ${KEY_ENV} to the key file")
    if mode & 0o077:
        raise _key_error(
            f"audit signing key {path}: permissions {stat.S_IMODE(mode):04o} let other users read it; run `chmod 600 {path}`"
        )
    try:
        key = load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as err:
        raise _key_error(f"audit signing key {path}: not a readable PEM private key ({str(err).splitlines()[0]})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise _key_error(f"audit signing key {path}: not an Ed25519 key")
    return SigningKey(key, path)


def trusted_public_key(*, forbidden_dir: Path | None = None) -> PublicKey | None:
    """The key a log must be signed by: $UNLEARNOPS_AUDIT_PUBLIC_KEY, else the signing key's (if it exists)."""
    configured = os.environ.get(PUBLIC_KEY_ENV)
    if configured:
        text = configured
        candidate = Path(configured).expanduser()
        if candidate.is_file():
            text = candidate.read_text(encoding="utf-8", errors="replace")
        return PublicKey.from_vkey(text)
    if key_path().exists():
        return load_signing_key(forbidden_dir=forbidden_dir, create=False).public
    return None


def _refuse_inside(path: Path, directory: Path | None, *, what: str, fix: str) -> None:
    if directory is None:
        return
    resolved, root = path.expanduser().resolve(), directory.resolve()
    if resolved == root or root in resolved.parents:
        raise UnlearnopsError(f"{what}: inside {root}, which holds the audit log it protects; {fix}")


# ---- record signatures ----------------------------------------------------------------------
def sign_record(key: SigningKey, record_hash: str) -> str:
    return base64.b64encode(key.sign(RECORD_DOMAIN + record_hash.encode() + b"\n")).decode()


def record_signature_valid(key: PublicKey, record_hash: str, signature: object) -> bool:
    if not isinstance(signature, str):
        return False
    try:
        raw = base64.b64decode(signature, validate=True)
    except ValueError:
        return False
    return key.verifies(raw, RECORD_DOMAIN + record_hash.encode() + b"\n")


# ---- checkpoints (signed notes) -------------------------------------------------------------
@dataclass(frozen=True)
class Checkpoint:
    log_id: str
    size: int
    head_hash: str  # hex

    @property
    def origin(self) -> str:
        return ORIGIN_PREFIX + self.log_id

    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{base64.b64encode(bytes.fromhex(self.head_hash)).decode()}\n"

    def sign(self, key: SigningKey) -> str:
        body = self.body()
        signature = base64.b64encode(key.public.key_id + key.sign(body.encode())).decode()
        return f"{body}\n{_EM_DASH}{KEY_NAME} {signature}\n"


def open_checkpoint(note: str, key: PublicKey) -> Checkpoint:
    """Parse a signed checkpoint and verify its signature by `key`; raise naming what is wrong."""
    body, separator, signatures = note.rpartition("\n\n")
    if not separator:
        raise UnlearnopsError("checkpoint: not a signed note (no blank line before the signatures)")
    body += "\n"
    signed = False
    for line in signatures.splitlines():
        if not line.startswith(_EM_DASH):
            raise UnlearnopsError("checkpoint: malformed signature line")
        name, _, encoded = line[len(_EM_DASH):].partition(" ")
        try:
            raw = base64.b64decode(encoded, validate=True)
        except ValueError:
            raise UnlearnopsError("checkpoint: malformed signature line") from None
        if name == KEY_NAME and raw[:4] == key.key_id:
            if not key.verifies(raw[4:], body.encode()):
                raise UnlearnopsError("checkpoint: its signature does not verify with the configured key (forged or edited)")
            signed = True
    if not signed:
        raise UnlearnopsError(f"checkpoint: not signed by the configured key {key.fingerprint[:16]}…")
    lines = body.splitlines()
    try:
        origin, size, encoded_head = lines[:3]
        head = base64.b64decode(encoded_head, validate=True).hex()
        count = int(size)
    except ValueError:
        raise UnlearnopsError("checkpoint: the body is not origin, size and head hash") from None
    if not origin.startswith(ORIGIN_PREFIX) or count < 1 or len(head) != 64:
        raise UnlearnopsError("checkpoint: the body is not origin, size and head hash")
    return Checkpoint(origin[len(ORIGIN_PREFIX):], count, head)
