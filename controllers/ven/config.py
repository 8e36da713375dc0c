"""Configuration of the OpenADR 3 VEN client (pydantic, loaded from YAML by the runtime)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

ClientAuth = Literal["body", "basic", "auto"]
NotificationMode = Literal["webhook", "mqtt", "poll"]


class ResourceConfig(BaseModel):
    """One resource the VEN registers under its ven object."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=128)
    attributes: dict[str, list[float | int | str | bool]] = Field(
        default_factory=dict,
        description="valuesMap attributes by type, e.g. {'MAX_POWER_CONSUMPTION': [150.0]}.",
    )


class VenConfig(BaseModel):
    """Everything the VEN needs to find, authenticate to and follow a VTN."""

    model_config = ConfigDict(extra="forbid")

    vtn_url: str = Field(description="Base URL of the VTN API, e.g. https://vtn.example/openadr3")
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    ven_name: str = Field(min_length=1, max_length=128)
    resources: list[ResourceConfig] = Field(default_factory=list)
    verify_tls: bool = True
    ca_file: Path | None = None
    client_auth: ClientAuth = "auto"
    scope: str | None = None
    program_names: list[str] = Field(
        default_factory=list, description="Programs the VEN follows; empty: all it can read."
    )
    notification: NotificationMode = "webhook"
    callback_host: str = "127.0.0.1"
    callback_port: int = Field(default=0, ge=0, le=65535)
    callback_public_url: str | None = Field(
        default=None,
        description="URL the VTN should call when it differs from http://host:port (proxy, NAT).",
    )
    poll_interval_s: float = Field(default=60.0, gt=0)
    request_timeout_s: float = Field(default=10.0, gt=0)
    token_refresh_margin_s: float = Field(default=30.0, ge=0)

    @field_validator("vtn_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("vtn_url must start with http:// or https://")
        return value.rstrip("/")
