"""Every setting of a Milepost process, in one place: defaults, ``MILEPOST_*`` variables, a TOML file.

A setting comes from, highest first: an explicit value (a command-line flag, passed to
``load_settings``), its environment variable (``MILEPOST_`` + the field name in capitals:
``spark_master`` is ``MILEPOST_SPARK_MASTER``), the TOML file named by ``MILEPOST_CONFIG``
(or ``milepost --config FILE``; top-level keys are the field names), then the default here.
The README's "Settings" section lists them all.

Nothing reads the environment when a module is imported. A process reads its settings once
when it starts (the CLI calls ``load_settings``) and code fetches them through
``get_settings``; without a ``load_settings`` (a library user, a test) ``get_settings``
reads the environment at each call, so a test may set a variable for itself alone.
Bad values are refused when they are read, naming the variable: InvalidArgument.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from milepost.core.errors import InvalidArgument

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ENV_PREFIX = "MILEPOST_"
DEFAULT_BATCH_ROWS = 65536


def env_var(field: str) -> str:
    """The environment variable of a setting: ``env_var("spark_master") == "MILEPOST_SPARK_MASTER"``."""
    return f"{ENV_PREFIX}{field.upper()}"


class Settings(BaseSettings):
    """One process's settings; immutable once read. Field names are the TOML keys."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    # ---- the file itself ----
    config: Path | None = Field(None, description="TOML file with more settings (its keys are the names below, lower case)")

    # ---- processes and the command line ----
    home: Path = Field(default_factory=lambda: Path.home() / ".milepost",
                       description="data directory of `milepost up`, `coordinator` (home/coordinator), `agent` (home/agent)")
    coordinator: str = Field("127.0.0.1:7070", description="coordinator address client commands and agents use (--coordinator)")
    tls_cert: Path | None = Field(None, description="PEM certificate of this process (--tls-cert); with tls_key: TLS")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert (--tls-key)")
    tls_ca: Path | None = Field(None, description="PEM CA of the peers (--tls-ca): mutual TLS, both sides verified")
    insecure: bool = Field(False, description="1: let a server listen on a non-loopback address without TLS (--insecure)")
    token: str = Field("", description="bearer token of the CLI, milepost.Client and agents (--token); empty: the "
                       "admin.token `milepost up` wrote in home/coordinator or the data directory")
    host: str = Field("127.0.0.1", description="interface `up`, `coordinator` and `agent` listen on (--host)")
    coordinator_port: int = Field(7070, ge=0, le=65535,
                                  description="coordinator port of `up` and `coordinator`; 0 picks a free one")
    agent_port: int = Field(8001, ge=0, le=65535, description="agent data-plane port of `up` and `agent`; 0 picks a free one")
    metrics_port: int = Field(8002, ge=-1, le=65535, description="agent Prometheus /metrics port; -1: off, 0: a free one")
    http_port: int = Field(8000, ge=-1, le=65535, description="agent REST (Open Inference Protocol over HTTP) port of "
                           "`up` and `agent`; -1: off, 0: a free one")
    console_port: int = Field(7080, ge=-1, le=65535, description="coordinator web console port of `up` and "
                              "`coordinator`; -1: off, 0: a free one")
    drift_window_rows: int = Field(10_000, ge=1, description="rows of live traffic in one drift window of a deployment "
                                   "whose bundle carries a training baseline")
    drift_window_s: float = Field(300.0, gt=0, description="longest a drift window stays open, seconds")
    drift_budget: float = Field(0.01, ge=0, le=1, description="share of scoring time drift counting may take; past "
                                "it a batch of 1,024 rows or more is counted in part (a block of its rows), a smaller "
                                "one not at all "
                                "(the window holds a sample); 1: every row")
    max_inflight_bytes: int = Field(256 << 20, ge=1, description="bytes of inference requests an agent serves at "
                                    "once; past it RESOURCE_EXHAUSTED")
    inline_max_bytes: int = Field(16 << 10, ge=0, description="largest inference request an agent may serve on its "
                                  "server's event loop, without a thread hop (a model hosted here, scoring in under "
                                  "0.25 ms); 0: every request on a worker thread")
    served_keys_remembered: int = Field(100_000, ge=0, description="(endpoint, request key) pairs an agent remembers "
                                        "the serving arm of, so feedback by key credits that arm; 0: none")
    decision_log_queue: int = Field(10_000, ge=1, description="decisions an agent's decision log holds before writing; "
                                    "past it (or decision_log_queue_bytes) they are dropped and counted, never waited for")
    decision_log_queue_bytes: int = Field(64 << 20, ge=1, description="request bytes the decision log's queue holds")
    decision_log_rotate_bytes: int = Field(64 << 20, ge=1, description="size at which a decision log Parquet file is "
                                           "closed and a new one begun")
    decision_log_rotate_s: float = Field(3600.0, gt=0, description="age at which a decision log file is closed, seconds")
    decision_log_retention_s: float = Field(190 * 86400.0, gt=0, description="how long an agent keeps decision log "
                                            "files, seconds (default: 190 days; the EU AI Act asks for six months)")
    call_timeout_s: float = Field(120.0, gt=0, description="deadline of each call a CLI command makes, seconds (--timeout)")
    agent_ttl_s: float = Field(5.0, gt=0, description="seconds without a heartbeat before the coordinator marks an agent lost")
    heartbeat_interval_s: float = Field(1.0, gt=0, description="seconds between an agent's heartbeats, as the coordinator asks")
    placement: Literal["spread", "pack"] = Field("spread", description="how the coordinator places replicas: spread or pack")
    gpu_crossover_rows: int = Field(4096, ge=1, description="batch size from which a deployment with --device auto "
                                    "goes on a GPU; below it on CPU (a GPU rarely wins at small batches: launch and "
                                    "copy costs dominate at batch 1)")
    log_format: Literal["text", "json"] = Field("text", description="how processes log: text, or json (one object a "
                                                "line: time, level, component, message, request_id)")
    log_level: Literal["", "debug", "info", "warning", "error"] = Field(
        "", description="log level; empty: info for `up`, `coordinator` and `agent`, warning for other commands")
    tracing: Literal["off", "otlp", "console"] = Field(
        "off", description="OpenTelemetry traces of agents and the coordinator (the otel extra): otlp (to the "
        "collector OTEL_EXPORTER_OTLP_ENDPOINT names), console, or off")
    batch_rows: int = Field(DEFAULT_BATCH_ROWS, ge=1, description="rows per engine call when scoring a dataset "
                            "(score-dataset --batch-rows, batch_scoring stages without batch_rows)")

    approval_requires_validation: bool = Field(False, description="1: the coordinator approves a model version only "
                                               "after a passing `milepost validate` report")

    # ---- engines and stages ----
    allow_code_bundles: bool = Field(False, description="1: run python code bundles and any stage entry point on this node "
                                     "(executes their code)")
    stage_entries: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="comma-separated exact module:function names a training or custom stage may name, "
        "beyond the built-in trainers (engines.trainers.BUILT_IN); not prefixes")
    data_roots: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="comma-separated folders (or URI prefixes, s3://bucket/ml/) whose files training and "
        "batch-scoring stages may read and write, besides the agent's data directory")
    stage_cpu_seconds: float = Field(4 * 3600.0, gt=0, description="CPU time one training, custom or batch-scoring "
                                     "stage may use (its process and the processes it starts); past it the stage is killed")
    stage_memory_mb: int = Field(8192, ge=64, description="resident memory one stage may hold (its process and the "
                                 "processes it starts), MiB; past it the stage is killed")
    spark_master: str = Field("local[2]", description="Spark master of the spark engine when a job names none")
    spark_masters: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="comma-separated Spark masters a pipeline may name (params.master, options.master) besides "
        "spark_master and local[N]")
    ray_address: str = Field("", description="Ray cluster of the ray engine; empty: start a local Ray")
    ray_addresses: Annotated[tuple[str, ...], NoDecode] = Field(
        (), description="comma-separated Ray clusters a pipeline may name (params.address, options.address) besides "
        "ray_address and a local Ray")
    ray_local_cpus: int = Field(2, ge=1, description="CPUs of the local Ray the ray engine starts")

    # ---- control-plane timeouts (seconds) ----
    client_timeout_s: float = Field(60.0, gt=0, description="default deadline of a milepost.Client call")
    endpoint_cache_s: float = Field(10.0, gt=0, description="seconds milepost.Client keeps which agents serve an "
                                    "endpoint before asking the coordinator again (while it is down: for as long as it is)")
    model_fetch_timeout_s: float = Field(300.0, gt=0, description="an agent fetching a model bundle from the coordinator")
    registration_timeout_s: float = Field(5.0, gt=0, description="an agent's register and heartbeat calls")
    registration_max_backoff_s: float = Field(5.0, gt=0, description="longest wait between an agent's failed registrations")
    gpu_probe_timeout_s: float = Field(10.0, gt=0, description="nvidia-smi when an agent probes its GPUs")
    remote_call_timeout_s: float = Field(30.0, gt=0, description="an agent calling a member on another agent without a deadline")
    describe_timeout_s: float = Field(10.0, gt=0, description="an agent asking another for a model's metadata")
    shadow_timeout_s: float = Field(10.0, gt=0, description="a shadow (mirrored) call")
    load_timeout_s: float = Field(120.0, gt=0, description="the coordinator loading a deployment on an agent")
    agent_call_timeout_s: float = Field(10.0, gt=0, description="the coordinator's other calls to agents (unload, routes)")
    stage_timeout_s: float = Field(86400.0, gt=0, description="one pipeline stage on an agent")
    drain_timeout_s: float = Field(15.0, ge=0, description="longest an agent given SIGTERM keeps serving while clients "
                                   "and peers move away (it stops sooner once no request came for drain_quiet_s)")
    drain_quiet_s: float = Field(1.0, ge=0, description="how long without a request ends a drain early")

    # ---- bounds on what callers send ----
    max_bundle_bytes: int = Field(2 << 30, ge=1, description="largest model archive PushModel accepts, bytes as sent")
    max_bundle_expanded_bytes: int = Field(2 << 30, ge=1, description="most bytes a model archive may unpack to, "
                                           "counted while unpacking")
    max_bundle_files: int = Field(10_000, ge=1, description="most files and folders a model archive may hold")
    max_pipeline_spec_bytes: int = Field(256 << 10, ge=1, description="largest pipeline spec SubmitPipeline accepts, "
                                         "bytes as sent")
    max_pipeline_spec_depth: int = Field(32, ge=1, description="deepest nesting of lists and objects in a stage's params")
    stream_idle_timeout_s: float = Field(60.0, gt=0, description="seconds a server waits for the next message of a "
                                         "request stream (PushModel's chunks); past it the call ends with DEADLINE_EXCEEDED")

    @field_validator("stage_entries", "data_roots", "spark_masters", "ray_addresses", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(p.strip() for p in value.split(",") if p.strip())
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _ConfigFile(settings_cls)


class _ConfigFile(PydanticBaseSettingsSource):
    """The TOML file named by the ``config`` setting, below explicit values and the environment."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self().get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        path = self.current_state.get("config")  # what the sources above this one found
        if not path:
            return {}
        try:
            with Path(path).open("rb") as handle:
                return tomllib.load(handle)
        except OSError as err:
            raise InvalidArgument(f"settings file {path} ({env_var('config')}): cannot read it: {err}") from err
        except tomllib.TOMLDecodeError as err:
            raise InvalidArgument(f"settings file {path} ({env_var('config')}): not valid TOML: {err}") from err


_loaded: Settings | None = None


def read_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Read settings now (explicit ``overrides`` > environment > ``config_file`` or $MILEPOST_CONFIG > defaults)."""
    values = {k: v for k, v in overrides.items() if v is not None}
    if config_file:
        values["config"] = Path(config_file)
    try:
        return Settings(**values)
    except ValidationError as err:
        raise InvalidArgument(f"settings: {'; '.join(_problem(e) for e in err.errors())}") from err


def _problem(error: Any) -> str:
    name = str(error["loc"][0]) if error["loc"] else ""
    if error["type"] == "extra_forbidden":
        return f"unknown setting {name!r}"
    return f"{name} ({env_var(name)}): {error['msg']}"


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Read settings as ``read_settings`` does and make them this process's (``get_settings``):
    what a process calls once when it starts."""
    global _loaded
    _loaded = read_settings(config_file, **overrides)
    return _loaded


def get_settings() -> Settings:
    """This process's settings: those ``load_settings`` read, else read from the environment now."""
    return _loaded if _loaded is not None else read_settings()


def reset_settings() -> None:
    """Forget the settings ``load_settings`` read; ``get_settings`` reads the environment again."""
    global _loaded
    _loaded = None
