"""Settings from ``XF_*`` environment variables, with defaults that make the embedded run work.

One object for every service, so the names are documented in one place (README, "Configuration").
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]
SERVICES = ("intake", "routing", "supervision", "scoring")
DEFAULT_PORTS = {"intake": 8101, "routing": 8102, "supervision": 8103, "scoring": 8104}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="XF_", extra="ignore")

    # Where state lives. The embedded run keeps everything under data_dir.
    data_dir: Path = Path("var")
    config_dir: Path = REPO_ROOT / "deploy" / "config"

    # NATS: unset means "start the embedded nats-server" for `xinfang up`,
    # and the embedded address for a service started alone.
    nats_url: str | None = None
    embedded_nats_port: int = 4250
    embedded_nats_monitor_port: int = 8250
    stream_name: str = "CASES"
    # Nats-Msg-Id de-duplication window; longer than any outbox retry gap we expect.
    duplicate_window_s: float = 600.0
    # Production sets this: NATS fsyncs before it acks (DESIGN §8). The embedded run keeps the default.
    nats_sync_always: bool = False

    # One database per service; unset means a SQLite file in data_dir.
    intake_db_url: str | None = None
    routing_db_url: str | None = None
    supervision_db_url: str | None = None
    scoring_db_url: str | None = None

    http_host: str = "127.0.0.1"
    intake_port: int = DEFAULT_PORTS["intake"]
    routing_port: int = DEFAULT_PORTS["routing"]
    supervision_port: int = DEFAULT_PORTS["supervision"]
    scoring_port: int = DEFAULT_PORTS["scoring"]

    # Bearer tokens per role. Unset means the role is open (embedded/dev run; a warning is logged).
    clerk_token: SecretStr | None = None
    supervisor_token: SecretStr | None = None  # the supervision office: triage decisions, extensions

    # Key of the keyed hash of resident ID numbers (HMAC-SHA256). Must be set in production.
    id_hash_key: SecretStr = SecretStr("xinfang-dev-key-change-me")

    # Intake limits and rules.
    max_body_bytes: int = 64 * 1024
    max_upload_bytes: int = 20 * 1024 * 1024
    repeat_window_days: int = 180
    repeat_similarity: float = Field(0.5, ge=0.0, le=1.0)
    import_chunk_rows: int = Field(500, ge=1, le=2000)

    # Outbox relay.
    relay_batch: int = 500
    relay_poll_s: float = 0.5
    relay_lease_s: float = 30.0
    outbox_retention_days: int = 30

    # Durable consumers: a message unacknowledged this long goes to another replica; a message that
    # failed this many times goes to the dead-letter subject.
    consumer_ack_wait_s: float = 30.0
    consumer_batch: int = Field(100, ge=1, le=1000)  # events fetched and applied per transaction
    consumer_max_deliver: int = 5
    # A department's event stamped at most this long before the bus received it is placed at the
    # receipt time on the case's timeline (its server clock may run a few minutes behind).
    clock_tolerance_s: float = Field(300.0, ge=0)

    # Supervision: how often deadlines are swept; time travel (tests and demos only) lets
    # POST /api/v1/clock/advance move supervision's clock, and sweeps then catch up exactly.
    sweep_interval_s: float = 60.0
    time_travel: bool = False

    log_level: str = "INFO"

    def db_url(self, service: str) -> str:
        url = getattr(self, f"{service}_db_url")
        if url:
            return url
        return f"sqlite:///{(self.data_dir / f'{service}.db').resolve()}"

    def port(self, service: str) -> int:
        return getattr(self, f"{service}_port")

    def base_url(self, service: str) -> str:
        return f"http://{self.http_host}:{self.port(service)}"

    @cached_property
    def effective_nats_url(self) -> str:
        return self.nats_url or f"nats://127.0.0.1:{self.embedded_nats_port}"
