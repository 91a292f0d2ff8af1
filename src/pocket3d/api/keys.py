"""API keys: ``p3d_<key id>_<secret>``. Only a SHA-256 of the secret is stored; keys are long random
strings, so a fast hash is enough (there is nothing to brute-force as with passwords)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

import sqlalchemy as sa

from pocket3d.jobs import schema as t
from pocket3d.jobs.store import Store

ROLES = ("admin", "user")
LOCAL_OWNER = "local"


@dataclass(frozen=True)
class Principal:
    owner_id: str
    role: str
    key_id: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def can_see(self, owner_id: str) -> bool:
        return self.is_admin or owner_id == self.owner_id


LOCAL_PRINCIPAL = Principal(owner_id=LOCAL_OWNER, role="admin")
STATE_KEY = "principal"  # where api.auth leaves the caller's Principal in the ASGI scope's state


@dataclass(frozen=True)
class KeyInfo:
    id: str
    owner_id: str
    name: str
    role: str
    created_at: float
    revoked_at: float | None


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(store: Store, *, name: str, role: str, owner_id: str | None = None) -> tuple[KeyInfo, str]:
    """Returns the key's record and the token, which is shown once and never stored."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    info = KeyInfo(id=key_id, owner_id=owner_id or name, name=name, role=role, created_at=time.time(),
                   revoked_at=None)
    with store.write() as tx:
        tx.conn.execute(t.api_keys.insert().values(id=info.id, owner_id=info.owner_id, name=name, role=role,
                                                   secret_sha256=_digest(secret), created_at=info.created_at))
    return info, f"p3d_{key_id}_{secret}"


def list_keys(store: Store) -> list[KeyInfo]:
    with store.read() as conn:
        rows = conn.execute(sa.select(t.api_keys).order_by(t.api_keys.c.created_at)).mappings().all()
    return [KeyInfo(id=r["id"], owner_id=r["owner_id"], name=r["name"], role=r["role"], created_at=r["created_at"],
                    revoked_at=r["revoked_at"]) for r in rows]


def revoke_key(store: Store, key_id: str) -> bool:
    with store.write() as tx:
        return bool(tx.conn.execute(t.api_keys.update().where(t.api_keys.c.id == key_id,
                                                              t.api_keys.c.revoked_at.is_(None))
                                    .values(revoked_at=time.time())).rowcount)


def is_active(store: Store, key_id: str) -> bool:
    """The key exists and is not revoked (an open event stream asks, now and then)."""
    with store.read() as conn:
        row = conn.execute(sa.select(t.api_keys.c.revoked_at).where(t.api_keys.c.id == key_id)).first()
    return row is not None and row.revoked_at is None


def authenticate(store: Store, token: str) -> Principal | None:
    prefix, _, rest = token.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != "p3d" or not key_id or not secret:
        return None
    with store.read() as conn:
        row = conn.execute(sa.select(t.api_keys.c.owner_id, t.api_keys.c.role, t.api_keys.c.secret_sha256,
                                     t.api_keys.c.revoked_at).where(t.api_keys.c.id == key_id)).first()
    if row is None or row.revoked_at is not None or not hmac.compare_digest(row.secret_sha256, _digest(secret)):
        return None
    return Principal(owner_id=row.owner_id, role=row.role, key_id=key_id)
