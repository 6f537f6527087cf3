"""Bot configuration: environment variables (``SOPBOT_…``, nested with ``__``) over an optional
YAML file (``sopbot run --config FILE``). Every secret is a ``SecretStr``."""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator,
                      model_validator)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from bot.models import Severity

_CONFIG_FILE: ContextVar[Path | None] = ContextVar("sopbot_config_file", default=None)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MattermostConfig(Section):
    url: str = Field("http://localhost:8065", description="Mattermost server URL")
    token: SecretStr | None = Field(None, description="bot account's access token")
    team: str = Field("platform", description="team name (URL name) the bot works in")
    channel: str = Field("sop-alerts", description="default channel for alerts and reports")
    rate_limit_per_s: float = Field(10.0, gt=0, description="posts per second at most")
    request_timeout_s: float = Field(10.0, gt=0, description="seconds per Mattermost API call")
    websocket: bool = Field(True, description="follow reactions over the websocket")
    # Accepted work (alert notifications, threads, reports) outlives a Mattermost outage.
    retry_base_s: float = Field(2.0, gt=0, description="first wait before retrying work Mattermost did not take; doubles each time")
    retry_max_s: float = Field(60.0, gt=0, description="longest wait between such retries")
    retry_horizon_h: float = Field(24.0, gt=0, description="hours accepted work is retried before it is given up")

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        if not urlsplit(v).hostname:
            raise ValueError("has no host name")
        return v.rstrip("/")


class CommandRateLimitConfig(Section):
    """Commands that hit the platform's APIs (``/sop <ID>``, ``/sop health``): a token bucket per
    user and one for everyone; a refused command is told when to retry. Joining a run already
    under way (same command, arguments and channel) costs nothing."""

    enabled: bool = Field(True, description="refuse commands over the limits below")
    per_user_burst: int = Field(5, ge=1, description="runs one user may start at once…")
    per_user_refill_s: float = Field(10.0, gt=0, description="…then one more every this many seconds")
    global_burst: int = Field(20, ge=1, description="runs everyone together may start at once…")
    global_refill_s: float = Field(2.0, gt=0, description="…then one more every this many seconds")


class SlashCommandConfig(Section):
    tokens: list[SecretStr] = Field(default_factory=list,
                                    description="tokens Mattermost sends with /sop (several allowed)")
    trigger: str = Field("sop", description="the slash command's trigger word")
    rate_limit: CommandRateLimitConfig = Field(default_factory=CommandRateLimitConfig)


class ServerConfig(Section):
    host: str = Field("127.0.0.1", description="listen address (0.0.0.0 in a container)")
    port: int = Field(8080, ge=0, le=65535, description="listen port (0: any free port)")
    public_url: str | None = Field(None, description="URL Mattermost reaches the bot at (dialogs)")


class KubernetesConfig(Section):
    kubeconfig: Path | None = Field(None, description="kubeconfig; in-cluster config when unset")
    context: str | None = Field(None, description="kubeconfig context (default: current)")
    mgmt_kubeconfig: Path | None = Field(
        None, description="second cluster, e.g. cluster/kubeconfig-harvester.yaml")
    timeout_s: float = Field(10.0, gt=0, description="seconds per Kubernetes API call")


class VaultConfig(Section):
    # NoDecode: the environment gives "http://a:8200,http://b:8200", not JSON.
    addrs: Annotated[list[str], NoDecode] = Field(default_factory=list,
                                                 description="one address per replica")
    names: Annotated[list[str], NoDecode] = Field(default_factory=list,
                                                 description="replica names (default vault-N)")
    token: SecretStr | None = Field(None, description="read token for raft peers")
    timeout_s: float = Field(5.0, gt=0, description="seconds per Vault call")
    verify: bool = Field(True, description="verify Vault's TLS certificate")

    @field_validator("addrs", "names", mode="before")
    @classmethod
    def _comma_list(cls, v: Any) -> Any:
        return [p.strip() for p in v.split(",") if p.strip()] if isinstance(v, str) else v


class ProbeConfig(Section):
    """HTTP/TLS probes of the platform's own endpoints (runbook 4.2, 4.5). Targets come from
    cluster objects or this config, never from chat; an address outside ``allowed_cidrs`` is
    never connected to."""

    allowed_cidrs: list[str] = Field(default_factory=list,
                                     description="addresses probes may connect to, e.g. [203.0.113.0/24, 10.43.0.0/16]; empty: no probes")
    address_map: dict[str, str] = Field(default_factory=dict,
                                        description="host:port → ip:port the bot connects to instead (a port-forward, the sandbox)")
    timeout_s: float = Field(5.0, gt=0, description="seconds per probe (connect, handshake, answer)")
    max_body_bytes: int = Field(65536, gt=0, description="an HTTP probe reads at most this much of the body")

    @field_validator("allowed_cidrs")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        import ipaddress

        for cidr in v:
            ipaddress.ip_network(cidr, strict=False)  # ValueError names it
        return v

    @field_validator("address_map")
    @classmethod
    def _host_ports(cls, v: dict[str, str]) -> dict[str, str]:
        for key, target in v.items():
            for item in (key, target):
                host, _, port = item.rpartition(":")
                if not host or not port.isdigit():
                    raise ValueError(f"{item!r} is not host:port")
        return v


class PrometheusConfig(Section):
    url: str | None = Field(None, description="Prometheus HTTP API base URL")
    timeout_s: float = Field(10.0, gt=0, description="seconds per Prometheus query")


class AlertRouteConfig(Section):
    """One alert route: Alertmanager-style matchers, first match wins (before SOP declarations)."""

    matchers: list[str] = Field(description='e.g. [\'alertname="NodeDiskPressure"\', \'node=~"cp-.*"\']')
    sop: str | None = Field(None, description="SOP id to run; unset: the SOPs declaring the alert")
    channel: str | None = Field(None, description="channel name; unset: alertmanager.channel")
    mention: list[str] = Field(default_factory=list, description="usernames to mention")
    severity: Severity | None = Field(None, description="override the SOP's runbook severity")

    @field_validator("matchers")
    @classmethod
    def _valid_matchers(cls, v: list[str]) -> list[str]:
        from bot.alerts.matchers import parse_matchers

        parse_matchers(v)  # raises ValueError naming the bad matcher
        if not v:
            raise ValueError("at least one matcher")
        return v


class EscalationConfig(Section):
    ack_emoji: str = Field("eyes", description="reaction that acknowledges an alert thread")
    # Seconds to acknowledge per severity; null = by the start of the next business day.
    response_s: dict[Severity, float | None] = Field(
        default_factory=lambda: {Severity.P1: 900.0, Severity.P2: 3600.0, Severity.P3: 14400.0,
                                 Severity.P4: None},
        description="seconds to acknowledge per severity before escalating (null: next business day)")
    business_day_start_hour: int = Field(9, ge=0, le=23, description="UTC hour (P4 deadline)")
    contacts: list[str] = Field(default_factory=list, description="usernames to mention")
    contacts_by_severity: dict[Severity, list[str]] = Field(
        default_factory=dict, description="usernames to mention per severity (instead of contacts)")
    check_interval_s: float = Field(30.0, gt=0, description="how often unacknowledged threads are checked")


class AlertmanagerConfig(Section):
    url: str | None = Field(None, description="Alertmanager API base URL")
    webhook_token: SecretStr | None = Field(None, description="bearer token Alertmanager sends")
    webhook_username: str | None = Field(None, description="basic-auth user Alertmanager sends (with webhook_password)")
    webhook_password: SecretStr | None = None
    max_body_bytes: int = Field(1 << 20, gt=0, description="larger webhook bodies are refused with 413")
    channel: str | None = Field(None, description="alert threads' channel; unset: mattermost.channel")
    mention: list[str] = Field(default_factory=list, description="usernames every new thread mentions")
    routes: list[AlertRouteConfig] = Field(default_factory=list, description="label matchers → SOP, channel, mentions; first match wins")
    reopen_window_s: float = Field(3600.0, ge=0, description="fired again within: reopen the thread")
    rediagnose_after_s: float = Field(60.0, ge=0, description="repeats sooner reuse the diagnosis")
    replies_per_group: int = Field(10, ge=1, description="diagnosis and 'no SOP matches' replies per group per reply_window_s; the rest are folded into the root")
    reply_window_s: float = Field(600.0, gt=0, description="the window replies_per_group counts in")
    flap_window_s: float = Field(600.0, ge=0, description="a group firing again this soon after resolving is not diagnosed again")
    reconcile_interval_s: float = Field(60.0, gt=0, description="how often open threads are checked against Alertmanager's alerts")
    storm_groups: int = Field(20, ge=1, description="more new groups than this within storm_window_s…")
    storm_window_s: float = Field(60.0, gt=0, description="…go to one storm thread")
    escalation: EscalationConfig = Field(default_factory=EscalationConfig)


class RunbookConfig(Section):
    path: Path | None = Field(None, description="the team's runbook (Markdown, numbered headings)")
    url: str | None = Field(None, description="where people read it; section anchors are appended")


class StoreConfig(Section):
    """SQLite (``path``) by default, for one replica and the demo; PostgreSQL (``url``) for
    several replicas on one database."""

    path: Path = Field(Path("sopbot.db"), description="SQLite file (the webhook inbox is <name>-inbox<suffix> beside it)")
    url: str | None = Field(None, description="postgresql://USER@HOST:5432/DB: the PostgreSQL store instead of SQLite; no password in it")
    password: SecretStr | None = Field(None, description="the PostgreSQL user's password (SOPBOT_STORE__PASSWORD, from a Secret)")
    sslmode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] = Field(
        "verify-full", description="TLS to PostgreSQL, as libpq's sslmode")
    sslrootcert: Path | None = Field(None, description="CA file the server's certificate must chain to (CNPG: the cluster's ca.crt)")
    sslcert: Path | None = Field(None, description="client certificate file (certificate authentication)")
    sslkey: Path | None = Field(None, description="its key file")
    pool_size: int = Field(5, ge=1, le=100, description="PostgreSQL connections (plus one for the webhook commits)")

    @field_validator("url")
    @classmethod
    def _postgresql_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        parts = urlsplit(url)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("store.url: expected postgresql://USER@HOST:PORT/DATABASE")
        if parts.password:
            raise ValueError("store.url: no password in the URL (it would be shown and logged); "
                             "set store.password (SOPBOT_STORE__PASSWORD) from a Secret")
        return url

    @model_validator(mode="after")
    def _tls_files(self) -> "StoreConfig":
        if self.url and (self.sslrootcert or self.sslcert) and self.sslmode in ("disable", "prefer"):
            raise ValueError(f"store.sslmode {self.sslmode!r} with certificates: use require, verify-ca or verify-full")
        if self.sslkey and not self.sslcert:
            raise ValueError("store.sslkey without store.sslcert")
        return self


class ApprovalRuleConfig(Section):
    """Who may approve (usernames and/or groups), how many distinct approvals are needed."""

    approvers: list[str] = Field(default_factory=list, description="Mattermost usernames")
    groups: list[str] = Field(default_factory=list, description="names of remediation.groups")
    quorum: int | None = Field(None, ge=1, description="distinct approvals; unset: by risk")


class UnsealFromSecretConfig(Section):
    """Key source (a): the vault-init Secret written by Terraform (runbook 5.1 option B)."""

    enabled: bool = Field(False, description="read unseal keys from a Kubernetes Secret")
    namespace: str = Field("terraform-state", description="namespace of the unseal-keys Secret")
    secret_name: str = Field("vault-init", description="the Secret holding vault-init.json")
    key: str = Field("vault-init.json", description="data key holding vault operator init's JSON")


class RemediationConfig(Section):
    enabled: bool = Field(False, description="read-only unless true")
    approvers: list[str] = Field(default_factory=list, description="Mattermost usernames")
    # Static groups (name -> usernames) that rules refer to, e.g. {"vault-keyholders": [...]}.
    groups: dict[str, list[str]] = Field(default_factory=dict, description="approver groups: name → usernames")
    approver_groups: list[str] = Field(default_factory=list, description="groups allowed everywhere")
    by_risk: dict[Literal["low", "high"], ApprovalRuleConfig] = Field(default_factory=dict, description="approval rule per risk")
    by_action: dict[str, ApprovalRuleConfig] = Field(default_factory=dict, description="approval rule per action (wins over by_risk)")
    quorum_low: int = Field(1, ge=1, description="distinct approvals a low-risk action needs")
    quorum_high: int = Field(2, ge=1, description="distinct approvals a high-risk action needs")
    four_eyes: bool = Field(False, description="the requester cannot approve their own proposal")
    expiry_s: float = Field(900.0, gt=0, description="a proposal not approved by then expires")
    sweep_interval_s: float = Field(30.0, gt=0, description="how often expired proposals are closed")
    unseal_from_secret: UnsealFromSecretConfig = Field(default_factory=UnsealFromSecretConfig)
    key_holders: list[str] = Field(default_factory=list,
                                   description="who may hand an unseal share (empty: approvers)")


class AuthorizationRuleConfig(Section):
    """Who may run which commands where. A rule with no users and no groups is for everyone in
    the team; with no channels, for the bot's channels (mattermost, alert and health channels)."""

    commands: list[str] = Field(default_factory=lambda: ["*"],
                                description="SOP ids and subcommands (health, fix, share, …); * for all")
    users: list[str] = Field(default_factory=list, description="Mattermost usernames (empty: everyone)")
    groups: list[str] = Field(default_factory=list, description="names of remediation.groups")
    channels: list[str] = Field(default_factory=list,
                                description="channel names (empty: the bot's channels; * for any)")


class AuthorizationConfig(Section):
    rules: list[AuthorizationRuleConfig] = Field(
        default_factory=lambda: [AuthorizationRuleConfig()],
        description="a command runs when any rule allows it; default: everyone, every SOP, the bot's channels")
    audit_readers: list[str] = Field(default_factory=list,
                                     description="who may read /sop audit (empty: the remediation approvers)")
    audit_reader_groups: list[str] = Field(default_factory=list, description="groups who may read /sop audit")


class HealthScheduleConfig(Section):
    """One scheduled health report. ``cron`` is standard crontab: weekday 0/7 = Sunday,
    1 = Monday (not APScheduler 3's from_crontab numbering, where 0 = Monday); names work too."""

    name: str = Field("daily", pattern=r"^[a-z0-9][a-z0-9-]*$", description="report name (its diff history)")
    cron: str = Field("0 8 * * *", description="minute hour day month weekday, e.g. '0 8 * * mon-fri'")
    timezone: str = Field("UTC", description="IANA time zone the cron is read in, e.g. Europe/Berlin")
    checks: Literal["all"] | list[str] = Field("all", description="SOP ids, or all of the composition")
    severities: list[Severity] = Field(default_factory=list, description="only these, e.g. [P1]; empty: all")
    channel: str | None = Field(None, description="channel name; unset: health.channel")
    quiet_when_ok: bool = Field(False, description="post nothing when all is good and nothing was resolved "
                                                   "(e.g. an hourly P1-only check)")

    @model_validator(mode="after")
    def _valid_cron(self) -> "HealthScheduleConfig":
        from bot.schedule import cron_trigger

        cron_trigger(self.cron, self.timezone)  # ValueError names the bad field
        return self


class HealthCheckConfig(Section):
    """The daily health check of runbook 11.1: schedules, where they post, leader election.
    What each check expects (node count, LB IP, IngressRoutes...) lives in ``checks.<sop id>``."""

    enabled: bool = Field(True, description="run the schedules (on-demand /sop health always works)")
    composition: str = Field("daily", description="the set of areas (handlers/daytwo.py: daily)")
    channel: str | None = Field(None, description="channel name for scheduled reports; unset: mattermost.channel")
    schedules: list[HealthScheduleConfig] = Field(default_factory=lambda: [HealthScheduleConfig()], description="when health checks run and what they cover")
    misfire_grace_s: float = Field(3600.0, gt=0, description="a fire time missed by less still runs")
    check_timeout_s: float = Field(60.0, gt=0, description="per area")
    concurrency: int = Field(4, ge=1, le=32, description="Kubernetes requests in flight at once")
    lease_name: str = Field("sopbot-scheduler", description="coordination.k8s.io Lease electing the runner")
    lease_namespace: str | None = Field(None, description="unset: the pod's namespace, else 'default'")
    lease_duration_s: float = Field(15.0, gt=0, description="leader Lease duration (one replica runs schedules)")
    lease_renew_s: float = Field(5.0, gt=0, description="how often the leader renews its Lease")

    @model_validator(mode="after")
    def _unique_names(self) -> "HealthCheckConfig":
        names = [s.name for s in self.schedules]
        if len(names) != len(set(names)):
            raise ValueError(f"schedule names must be unique: {names}")
        return self


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="log level")
    json_format: bool = Field(False, alias="json", description="JSON lines instead of text")

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SOPBOT_", env_nested_delimiter="__",
                                      extra="forbid")

    mattermost: MattermostConfig = Field(default_factory=MattermostConfig)
    slash: SlashCommandConfig = Field(default_factory=SlashCommandConfig)
    server: ServerConfig = Field(default_factory=ServerConfig)
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    vault: VaultConfig = Field(default_factory=VaultConfig)
    prometheus: PrometheusConfig = Field(default_factory=PrometheusConfig)
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    alertmanager: AlertmanagerConfig = Field(default_factory=AlertmanagerConfig)
    runbook: RunbookConfig = Field(default_factory=RunbookConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    remediation: RemediationConfig = Field(default_factory=RemediationConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    health: HealthCheckConfig = Field(default_factory=HealthCheckConfig)
    authorization: AuthorizationConfig = Field(default_factory=AuthorizationConfig)
    # Per-SOP check settings handed to handlers (expected node count, LB IP...).
    checks: dict[str, dict[str, Any]] = Field(default_factory=dict, description="per-SOP check settings, e.g. node-health: {expected_nodes: 6}")

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings],
                                   init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource,
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = _CONFIG_FILE.get()
        if path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=path))
        return tuple(sources)


class ConfigError(Exception):
    """A config that cannot run; ``problems`` holds one line per problem, naming the field."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def load_settings(path: Path | None = None, **overrides: Any) -> Settings:
    if path is not None and not path.is_file():
        raise ConfigError([f"--config: {path} does not exist or is not a file"])
    token = _CONFIG_FILE.set(path)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError([_problem(e) for e in exc.errors()]) from None
    except ValueError as exc:  # YAML syntax errors and the like
        raise ConfigError([f"{path}: {exc}"]) from None
    finally:
        _CONFIG_FILE.reset(token)


def require_serving(settings: Settings) -> None:
    """What ``sopbot run`` cannot start without, checked before any network call: waiting for
    Mattermost is for outages, not for a token nobody set."""
    if settings.mattermost.token is None or not settings.mattermost.token.get_secret_value().strip():
        raise ConfigError(["mattermost.token: not set (the bot account's access token: "
                           "SOPBOT_MATTERMOST__TOKEN or mattermost.token in --config)"])


def _problem(err: Any) -> str:
    field = ".".join(str(p) for p in err["loc"]) or "config"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown setting"
    got = err.get("input")
    shown = "" if isinstance(got, (dict, list)) or "token" in field or "password" in field else f" (got {got!r})"
    return f"{field}: {msg}{shown}"


def masked(settings: Settings) -> dict[str, Any]:
    """The effective config as plain data, secrets shown as '**********'."""
    return settings.model_dump(mode="json", by_alias=True)


def secret_values(settings: BaseModel) -> list[str]:
    """Every SecretStr value in the settings, for the log filter that masks them."""
    found: list[str] = []

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(settings)
    return found
