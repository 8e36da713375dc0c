"""Billing API: FastAPI over the billing records and the token ledger (issue 8, item 6).

See :mod:`controllers.billing_api.app` for the endpoints and roles and
:mod:`controllers.billing_api.auth` for the tokens file. Imports nothing of ours but
``controllers``.
"""

from controllers.billing_api.app import create_app
from controllers.billing_api.auth import (
    Principal,
    Role,
    TokenConfig,
    TokenEntry,
    TokenFileError,
    hash_token,
    load_tokens,
)

__all__ = [
    "Principal",
    "Role",
    "TokenConfig",
    "TokenEntry",
    "TokenFileError",
    "create_app",
    "hash_token",
    "load_tokens",
]
