"""The one settings object: environment variables with the ``REGISTRY_`` prefix, or ``.env``.

Pointing the stack at PostgreSQL or another node is a setting, not a code change. Tests build their
own ``Settings(...)`` and pass it down; nothing reads the environment anywhere else.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parents[1]

# Anvil's well-known test mnemonic: every key derived from it is public. Local chains only.
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"

# The demo consortium's keystores are encrypted with this password unless REGISTRY_DEMO_PASSWORD says
# otherwise. Demo only: it is printed by `registry up` and guards nothing but Anvil's public test keys.
DEMO_PASSWORD = "registry-demo"
DEMO_INVOICES = 1000


class Settings(BaseSettings):
    """Configuration of every component (chain, node, deployment, demo)."""

    model_config = SettingsConfigDict(env_prefix="REGISTRY_", env_file=".env", extra="ignore")

    data_dir: Path = Field(default=ROOT / ".data", description="where node state, deployment and keys live")
    rpc_url: str | None = Field(default=None, description="JSON-RPC URL; unset: the local node under data_dir")
    node: Literal["anvil", "hardhat"] = Field(default="anvil", description="which local EVM node to run")
    rpc_host: str = "127.0.0.1"
    rpc_port: int = Field(default=8545, ge=0, le=65535, description="local node port; 0 picks a free one")
    block_time: float = Field(default=1.0, ge=0, description="local node interval mining in seconds; 0 = automine")
    block_gas_limit: int = Field(default=150_000_000, gt=0)
    chain_id: int = Field(default=31337, gt=0)
    deployment_file: Path | None = Field(default=None, description="unset: data_dir/deployment.json")
    admin_key: str | None = Field(default=None, description="consortium admin key; unset: Anvil test key 0")
    relayer_key: str | None = Field(default=None, description="key paying gas for relayed requests; unset: key 1")
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; unset: SQLite under data_dir")
    finality_depth: int = Field(default=64, ge=0, description="deepest reorg the indexer rolls back (0: instant)")
    header_window: int = Field(default=256, ge=1, description="recent block headers kept for reorg checks")
    poll_interval: float = Field(default=0.1, gt=0, description="indexer polling interval in live mode, seconds")
    max_log_range: int = Field(default=50_000, ge=1, description="largest eth_getLogs block range")
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    public_url: str | None = Field(default=None, description="URL users sign in to; unset: http://api_host:api_port")
    session_secret: str | None = Field(default=None, description="HMAC key of session tokens; unset: data_dir file")
    operator_key: str | None = Field(default=None, description="key signing search certificates; unset: admin key")
    rate_limit_per_minute: int = Field(default=1200, gt=0)
    max_page_size: int = Field(default=200, gt=0)
    max_body_bytes: int = Field(default=8_000_000, gt=0)
    cli_api_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REGISTRY_CLI_API", "cli_api_url"),
        description="API the `registry` CLI talks to (REGISTRY_CLI_API); unset: the chain and mirror directly",
    )
    keys_dir: Path = Field(
        default_factory=lambda data: Path(data["data_dir"]) / "keys",
        description="the demo identities' keystores (Web3 Secret Storage v3); unset: data_dir/keys",
    )
    directory_file: Path = Field(
        default_factory=lambda data: Path(data["data_dir"]) / "directory.json",
        description="participants' display names, kept by the operator (registry/directory.py); unset: data_dir",
    )
    demo_password: str = Field(
        default=DEMO_PASSWORD, min_length=1, description="password of the demo keystores (demo only, printed)"
    )
    demo_invoices: int = Field(default=DEMO_INVOICES, ge=0, description="invoices `up` seeds into an empty ledger")
    # Reminders (registry/reminders.py): days are measured on the indexed chain's block time.
    reminder_days_before: list[int] = Field(default=[7, 1], description="due-soon notices, days before the due date")
    reminder_overdue_steps: list[int] = Field(default=[1, 7, 30], description="overdue notices, days after due")
    reminder_unconfirmed_days: int = Field(default=5, gt=0, description="escalate an unconfirmed registration")
    reminder_unacknowledged_days: int = Field(default=3, gt=0, description="chase an unacknowledged payment")
    reminder_interval: float = Field(default=5.0, gt=0, description="reminder worker cycle, seconds")
    anomaly_interval: float = Field(default=2.0, gt=0, description="anomaly scans: how often to look for new blocks")
    webhook_secret: str | None = Field(default=None, description="HMAC key of webhook bodies; unset: data_dir file")
    webhook_timeout: float = Field(default=5.0, gt=0)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = "registry@localhost"
    notify_max_attempts: int = Field(default=8, ge=1, description="delivery attempts before the dead-letter list")
    notify_backoff: float = Field(default=2.0, gt=0, description="first retry delay, doubled per attempt, seconds")
    notify_backoff_cap: float = Field(default=900.0, gt=0, description="longest retry delay, seconds")
    notify_lease: float = Field(default=60.0, gt=0, description="a send not recorded by then is tried again")

    @field_validator("reminder_days_before", "reminder_overdue_steps")
    @classmethod
    def _steps(cls, value: list[int]) -> list[int]:
        if any(step <= 0 for step in value) or len(set(value)) != len(value):
            raise ValueError("steps must be distinct positive numbers of days")
        return sorted(value)

    @field_validator("rpc_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("rpc_url must be an http(s) URL")
        return value

    @property
    def deployment_path(self) -> Path:
        return self.deployment_file or self.data_dir / "deployment.json"

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'registry.db'}"

    @field_validator("database_url")
    @classmethod
    def _dsn(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("sqlite", "postgresql")):
            raise ValueError("database_url must be a sqlite:/// or postgresql:// URL")
        return value

    @property
    def node_url(self) -> str:
        """The JSON-RPC endpoint: ``rpc_url``, else the local node on rpc_host:rpc_port."""
        return self.rpc_url or f"http://{self.rpc_host}:{self.rpc_port}"

    @property
    def api_url(self) -> str:
        return self.public_url or f"http://{self.api_host}:{self.api_port}"

    @property
    def node_dir(self) -> Path:
        return self.data_dir / "node"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings (tests call ``get_settings.cache_clear()`` or pass their own)."""
    return Settings()
