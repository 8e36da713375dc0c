"""Configuration of the emulated VTN: clients, MQTT broker, grid-event file, time offset.

Loaded from YAML (``migrid device serve vtn --config FILE``) or built in code. A bad file
is rejected with the path of the bad field and the reason (pydantic), before anything
starts. Example::

    host: 127.0.0.1
    clients:
      - {id: bl, secret: bl-secret, role: BL}
      - {id: ven-1, secret: ven-1-secret, role: VEN}
    mqtt_url: mqtt://127.0.0.1:1883     # optional; without it /notifiers offers WEBHOOK only
    topic_prefix: ""                    # prepended to every MQTT topic name
    grid_events: grid-events/2021-07.yaml   # optional, relative to the config file
    time_offset: auto                   # or seconds / ISO 8601 duration (P1Y...), or omitted
    token_ttl_s: 3600

``scopes`` of a client default to :data:`DEFAULT_SCOPES` of its role.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "BL_SCOPES",
    "DECLARED_SCOPES",
    "DEFAULT_SCOPES",
    "VEN_SCOPES",
    "ClientConfig",
    "VtnConfig",
]

DECLARED_SCOPES: frozenset[str] = frozenset(
    {
        "read_all",
        "read_targets",
        "read_ven_objects",
        "write_programs",
        "write_events",
        "write_reports",
        "write_subscriptions",
        "write_vens",
    }
)
"""The scopes the 3.1.0 document's ``oAuth2ClientCredentials`` security scheme declares."""

BL_SCOPES: tuple[str, ...] = (
    "read_all",
    "read_targets",
    "read_ven_objects",
    "write_programs",
    "write_events",
    "write_subscriptions",
    "write_vens",
)
"""Default scopes of a business-logic (BL) client."""

VEN_SCOPES: tuple[str, ...] = (
    "read_all",
    "read_targets",
    "read_ven_objects",
    "write_reports",
    "write_subscriptions",
    "write_vens",
)
"""Default scopes of a VEN client.

``read_all`` is included because the spec requires it on ``GET /notifiers`` and on the
MQTT topic endpoints a VEN needs; what a VEN *sees* is decided by its role, not by
``read_all`` (see ``devices/vtn/README.md``).
"""

DEFAULT_SCOPES: dict[str, tuple[str, ...]] = {"BL": BL_SCOPES, "VEN": VEN_SCOPES}


class ClientConfig(BaseModel):
    """One OAuth2 client of the VTN.

    Attributes:
        id: ``client_id`` at the token endpoint; the token's ``sub`` and the objects'
            ``clientID``.
        secret: ``client_secret``.
        role: ``BL`` (business logic: sees and writes everything) or ``VEN`` (sees only
            its own vens, resources, reports, subscriptions and the programs/events its
            targets match).
        scopes: granted scopes; ``None``: the role's default.

    """

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=128)
    secret: str = Field(min_length=1, max_length=4096)
    role: Literal["BL", "VEN"] = "VEN"
    scopes: list[str] | None = None

    def granted(self) -> tuple[str, ...]:
        """Scopes this client's tokens carry."""
        return tuple(self.scopes) if self.scopes is not None else DEFAULT_SCOPES[self.role]


class VtnConfig(BaseModel):
    """Settings of one emulated VTN.

    Attributes:
        host: address to listen on.
        clients: OAuth2 clients (id, secret, role, scopes).
        mqtt_url: ``mqtt://host:port`` of the broker notifications are published to
            (advertised by ``GET /notifiers``); ``None``: webhooks only.
        topic_prefix: prepended to every MQTT topic (``""``: the spec's example names,
            ``programs/create`` ...).
        grid_events: grid-event file (YAML/JSON) to replay; relative paths resolve against
            the config file.
        time_offset: shift added to every time in the grid-event file (``publish_at`` and
            the events' and programs' interval starts): a duration (seconds or ISO 8601),
            ``"auto"`` (the first ``publish_at`` lands on the first ``now``), or ``None``.
        token_ttl_s: lifetime of issued tokens, seconds (``expires_in``).
        token_secret: HS256 key; ``None``: a random per-server key.
        echo_check: probe ``GET {callbackUrl}/echo`` before the first delivery to a
            callback URL (see README).
        problem_content_type: media type of error bodies; the spec declares
            ``application/json`` (some VTNs in the wild send ``application/problem+json``).
        webhook_timeout_s: timeout of one webhook request, seconds.

    """

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    clients: list[ClientConfig] = Field(default_factory=list)
    mqtt_url: str | None = None
    topic_prefix: str = ""
    grid_events: Path | None = None
    time_offset: timedelta | Literal["auto"] | None = None
    token_ttl_s: int = Field(default=3600, gt=0)
    token_secret: str | None = None
    echo_check: bool = True
    problem_content_type: Literal["application/json", "application/problem+json"] = (
        "application/json"
    )
    webhook_timeout_s: float = Field(default=5.0, gt=0)
