"""Bearer-token authentication of the billing API: a YAML file of token hashes.

The file maps the SHA-256 of each bearer token (64 lower-case hex digits) to a role and a
subject; tokens themselves are never stored::

    tokens:
      - sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8
        role: operator          # operator | driver
        subject: ops-team       # free text for an operator
      - sha256: 6b86b273ff34fce19c309d2f8cf3a4f7d9e1d6a2d0c3f5f2b2c8e3a1f4e5d6c7
        role: driver
        subject: DRV-0001       # the driver's id_token (the token on their sessions)

Compute a hash with ``printf %s 'the-token' | sha256sum``. A request's token is hashed
and looked up; an unknown token is refused (401). Unknown keys and a field named like a
plaintext token are rejected when the file is loaded, with the path of the bad field.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class Role(StrEnum):
    """What a token may do.

    ``operator`` reads everything and writes tariffs and reward rules; ``driver`` reads
    only their own sessions, CDRs, invoices, wallet and entries.
    """

    OPERATOR = "operator"
    DRIVER = "driver"


@dataclass(frozen=True)
class Principal:
    """The authenticated caller: ``role`` and ``subject`` (a driver's id_token)."""

    role: Role
    subject: str

    @property
    def is_operator(self) -> bool:
        """True for the operator role."""
        return self.role is Role.OPERATOR


class TokenEntry(BaseModel):
    """One token: ``sha256`` of the bearer token (hex), its ``role`` and ``subject``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    role: Role
    subject: Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00]*$")]


class TokenConfig(BaseModel):
    """The tokens file: a list of :class:`TokenEntry`, hashes unique.

    Raises (on construction):
        pydantic.ValidationError: bad hash, unknown role, duplicate hash, unknown key.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    tokens: list[TokenEntry]

    @model_validator(mode="after")
    def _unique(self) -> TokenConfig:
        hashes = [t.sha256 for t in self.tokens]
        if len(hashes) != len(set(hashes)):
            raise ValueError("token hashes must be unique")
        return self

    def lookup(self, token: str) -> Principal | None:
        """The principal of bearer ``token`` (hashed with SHA-256), or None if unknown."""
        digest = hash_token(token)
        found: Principal | None = None
        for t in self.tokens:  # compare every entry in constant time
            if hmac.compare_digest(t.sha256, digest):
                found = Principal(t.role, t.subject)
        return found


class TokenFileError(ValueError):
    """The tokens file is missing, not YAML, or invalid (message names the bad field)."""


def hash_token(token: str) -> str:
    """SHA-256 of the UTF-8 token, as 64 lower-case hex digits."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def load_tokens(path: str | Path) -> TokenConfig:
    """Load and validate a tokens YAML file.

    Raises:
        TokenFileError: unreadable file, bad YAML, or a bad field (path and reason).
    """
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise TokenFileError(f"{p}: {exc}") from exc
    try:
        return TokenConfig.model_validate(doc)
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(str(x) for x in e['loc']) or '<root>'}: {e['msg']}"
                          for e in exc.errors())
        raise TokenFileError(f"{p}: {where}") from exc
