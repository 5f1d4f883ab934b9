"""Settings from ``XF_*`` environment variables, with defaults that make the embedded run work.

One object for every service, so the names are documented in one place (README, "Configuration").
"""
from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AwareDatetime, Field, SecretStr, field_validator
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
    # and the embedded address for a service started alone. A cluster: its servers separated by
    # commas ("nats://nats-1:4222,nats://nats-2:4222,nats://nats-3:4222"); the client connects to one,
    # and goes to another when that one fails (nats_servers).
    nats_url: str | None = None
    embedded_nats_port: int = 4250
    embedded_nats_monitor_port: int = 8250
    # `xinfang up --cluster`: node i (0, 1, 2) listens on embedded_nats_port + i for clients, on
    # embedded_nats_monitor_port + i for monitoring and on embedded_nats_cluster_port + i for routes.
    embedded_nats_cluster_port: int = 6250
    stream_name: str = "CASES"
    # How many servers keep each stream (JetStream R1..R5): 1 for one server, 3 for a 3-node cluster
    # (one may fail, or be restarted, and no acknowledged event is lost). ensure_streams brings an
    # existing stream to it (shared/bus.py).
    stream_replicas: int = Field(1, ge=1, le=5)
    # Nats-Msg-Id de-duplication window; longer than any outbox retry gap we expect.
    duplicate_window_s: float = 600.0
    # Production sets this: NATS fsyncs before it acks (DESIGN §8). The embedded run keeps the default.
    nats_sync_always: bool = False
    # This process's NATS credentials (shared/natsauth.py); unset: the embedded run's own file for
    # the process, under <data_dir>/secrets/nats/. TLS: the CA to trust, and a client certificate.
    nats_creds: Path | None = None
    nats_tls_ca: Path | None = None
    nats_tls_cert: Path | None = None
    nats_tls_key: Path | None = None

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

    # The API tokens, stored hashed (shared/tokens.py); unset: <data_dir>/secrets/tokens.json.
    tokens_file: Path | None = None

    # Keys of the keyed hashes (shared/keys.py): no default in the code. Unset: the keys file
    # <data_dir>/secrets/keys.json, which the embedded run generates on its first start.
    # A ring "id:secret,id:secret" (current first) keeps old keys for checking; a bare value is one key.
    id_hash_key: SecretStr | None = None  # HMAC of resident ID numbers (repeat detection)
    query_code_key: SecretStr | None = None  # HMAC of query codes; seals the codes in stored answers

    # The resident's routes (feedback, reviews, progress): wrong codes counted per case and per client
    # over the last hour, in the service's database; past the limit, 429 with Retry-After.
    resident_case_failures: int = Field(10, ge=1)
    resident_client_failures: int = Field(30, ge=1)

    # Intake limits and rules.
    max_body_bytes: int = 64 * 1024
    max_upload_bytes: int = 20 * 1024 * 1024
    repeat_window_days: int = 180
    repeat_similarity: float = Field(0.5, ge=0.0, le=1.0)
    import_chunk_rows: int = Field(500, ge=1, le=2000)
    # A drive file: at most this many rows, this many bytes unpacked (an XLSX), and row errors listed.
    import_max_rows: int = Field(100_000, ge=1)
    import_max_unzipped_bytes: int = Field(200 * 1024 * 1024, ge=1)
    import_max_errors: int = Field(500, ge=1)
    # How long intake waits for supervision to say whether a resident's feedback or review fits the case.
    resident_step_timeout_s: float = Field(2.0, gt=0)

    # How long a transaction waits for a database lock, a pooled connection or a new connection
    # before it gives up: an HTTP request then answers 503 with Retry-After, a consumer retries.
    db_lock_timeout_s: float = Field(5.0, gt=0)

    # Outbox relay.
    relay_batch: int = 500
    relay_poll_s: float = 0.5
    relay_lease_s: float = 30.0
    # XF_OUTBOX_RETENTION_DAYS: sent outbox rows are kept this long, what `xinfang reconcile` can check
    # against the stream (DESIGN §8); the relay deletes older ones hourly. 0 or less would delete at once.
    outbox_retention_days: int = Field(30, ge=1)

    # Durable consumers: a message unacknowledged this long goes to another replica; a message that
    # failed this many times goes to the dead-letter subject.
    consumer_ack_wait_s: float = 30.0
    consumer_batch: int = Field(100, ge=1, le=1000)  # events fetched and applied per transaction
    consumer_max_deliver: int = 5
    # A consumer that has not fetched for this long is reported not ready, and restarted when idle.
    consumer_stall_s: float = Field(60.0, gt=0)
    # A department's event stamped at most this long before the bus received it is placed at the
    # receipt time on the case's timeline (its server clock may run a few minutes behind).
    clock_tolerance_s: float = Field(300.0, ge=0)

    # Supervision: how often deadlines are swept.
    sweep_interval_s: float = 60.0
    # demo or test: time travel — every clock stands still (at clock_start, else the real time) until
    # PUT /api/v1/clock sets it, and supervision's POST /api/v1/clock/advance moves it; never backwards.
    # production (the default): neither route exists.
    mode: Literal["production", "demo", "test"] = "production"
    clock_start: AwareDatetime | None = None

    log_level: str = "INFO"

    @field_validator("nats_url")
    @classmethod
    def _servers_listed(cls, value: str | None) -> str | None:
        if value is not None and not any(u.strip() for u in value.split(",")):
            raise ValueError("names no server: one URL, or several separated by commas")
        return value

    @property
    def time_travel(self) -> bool:
        return self.mode in ("demo", "test")

    def db_url(self, service: str) -> str:
        url = getattr(self, f"{service}_db_url")
        if url:
            return url
        return f"sqlite:///{(self.data_dir / f'{service}.db').resolve()}"

    def port(self, service: str) -> int:
        return getattr(self, f"{service}_port")

    def base_url(self, service: str) -> str:
        return f"http://{self.http_host}:{self.port(service)}"

    # Plain properties, not cached: a cached value would outlive model_copy(update={"nats_url": …}).
    @property
    def effective_nats_url(self) -> str:
        """As configured (several servers separated by commas): what is printed and handed to children."""
        return self.nats_url or f"nats://127.0.0.1:{self.embedded_nats_port}"

    @property
    def nats_servers(self) -> list[str]:
        """The servers to connect to, as nats-py and FastStream take them: a list (nats-py reads a
        string as one URL, so "a,b,c" must be split here)."""
        return [u.strip() for u in self.effective_nats_url.split(",") if u.strip()]
