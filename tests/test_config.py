"""Tests for service.config: defaults, value forms, layering and error reporting."""

from __future__ import annotations

import dataclasses
import importlib.util
from collections.abc import Mapping
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path

import pytest

from service.config import (
    _PARSERS,
    Address,
    BufferSettings,
    ConfigError,
    KafkaSettings,
    Settings,
    load_settings,
    parse_duration,
    parse_size,
)


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "unifrost.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def load(
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
    **kwargs: bool,
) -> Settings:
    """load_settings with an empty environment unless one is given."""
    return load_settings(config_file, env or {}, overrides, **kwargs)


def problems_for(
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(config_file, env, overrides)
    return info.value.problems


# --- defaults -------------------------------------------------------------


def test_defaults_match_the_spec() -> None:
    settings = load()
    assert settings == Settings()
    assert settings.broker == "memory://"
    assert settings.listen == Address("0.0.0.0", 8080)
    assert settings.admin_listen == Address("127.0.0.1", 8081)
    assert settings.admin_token is None
    assert (settings.consumer_ttl, settings.heartbeat, settings.retry) == (60.0, 15.0, 3.0)
    assert settings.drain_timeout == 10.0
    assert settings.event_name == "message"
    assert settings.event_loop == "asyncio"
    assert settings.buffer == BufferSettings(max_messages=1000, max_bytes=1048576)
    assert settings.max_write_buffer == settings.max_message_bytes == 1048576
    assert settings.limits.max_consumers is None
    assert settings.limits.max_subscriptions_per_consumer == 100
    assert settings.auto_create_consumers is False
    assert settings.client_subscriptions.enabled is False
    assert settings.client_subscriptions.allow == ()
    assert settings.cors_origins == ()
    assert settings.trusted_proxies == (ip_network("127.0.0.0/8"), ip_network("::1/128"))
    assert settings.demo is False
    assert (settings.log.format, settings.log.level) == ("json", "info")
    assert settings.rabbitmq.exchange == "amq.topic"
    assert settings.kafka == KafkaSettings(
        client_id="unifrost",
        security_protocol="PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username=None,
        sasl_password=None,
        ssl_cafile=None,
        ssl_certfile=None,
        ssl_keyfile=None,
    )


def test_every_settings_field_has_a_parser() -> None:
    def leaf_keys(obj: object, prefix: str = "") -> set[str]:
        keys: set[str] = set()
        for f in dataclasses.fields(obj):  # type: ignore[arg-type]
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                keys |= leaf_keys(value, f"{prefix}{f.name}.")
            else:
                keys.add(prefix + f.name)
        return keys

    assert leaf_keys(Settings()) == set(_PARSERS)


def test_log_format_default_follows_tty() -> None:
    assert load(stdout_is_tty=False).log.format == "json"
    assert load(stdout_is_tty=True).log.format == "console"
    assert load(overrides={"log.format": "json"}, stdout_is_tty=True).log.format == "json"


# --- value forms ----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("500ms", 0.5),
        ("15s", 15.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        (" 15S ", 15.0),
        ("42", 42.0),
        ("2.5", 2.5),
        (30, 30.0),
        (0.25, 0.25),
    ],
)
def test_parse_duration_forms(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    "value", ["abc", "", "-1", "1d", "15 seconds", True, None, [1], -5, float("nan"), 10**400]
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(value)


@pytest.mark.parametrize(
    ("value", "nbytes"),
    [
        ("1MiB", 1048576),
        ("64KiB", 65536),
        ("1GiB", 1073741824),
        ("1KB", 1000),
        ("2MB", 2000000),
        ("1GB", 1000000000),
        ("10B", 10),
        ("1.5KiB", 1536),
        ("1 mib", 1048576),
        ("2048", 2048),
        (512, 512),
    ],
)
def test_parse_size_forms(value: object, nbytes: int) -> None:
    assert parse_size(value) == nbytes


@pytest.mark.parametrize("value", ["lots", "", "1.5", "1TB", "0.1B", "-1", -1, 1.5, True, None])
def test_parse_size_rejects(value: object) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(value)


@pytest.mark.parametrize("word", ["true", "TRUE", "1", "yes", "On"])
def test_bool_true_words(word: str) -> None:
    assert load(env={"UNIFROST_DEMO": word}).demo is True


@pytest.mark.parametrize("word", ["false", "False", "0", "no", "OFF"])
def test_bool_false_words(word: str) -> None:
    assert load(overrides={"demo": word}).demo is False


def test_bool_already_typed_override() -> None:
    assert load(overrides={"demo": True}).demo is True


def test_lists_from_env_are_comma_separated() -> None:
    settings = load(
        env={
            "UNIFROST_CORS_ORIGINS": "https://a.example, https://b.example,,",
            "UNIFROST_CLIENT_SUBSCRIPTIONS__ALLOW": "news.*,sports.?",
        }
    )
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.client_subscriptions.allow == ("news.*", "sports.?")


def test_empty_list_string_means_empty_list() -> None:
    assert load(env={"UNIFROST_TRUSTED_PROXIES": ""}).trusted_proxies == ()


def test_trusted_proxies_accept_ips_and_cidrs() -> None:
    settings = load(overrides={"trusted_proxies": "10.1.2.3/8, 192.168.1.7, 2001:db8::/32"})
    assert settings.trusted_proxies == (
        IPv4Network("10.0.0.0/8"),  # host bits are dropped (strict=False)
        IPv4Network("192.168.1.7/32"),
        IPv6Network("2001:db8::/32"),
    )


@pytest.mark.parametrize(("value", "expected"), [("0", None), ("", None), ("5", 5), (0, None)])
def test_max_consumers_zero_or_empty_is_unlimited(value: object, expected: int | None) -> None:
    assert load(overrides={"limits.max_consumers": value}).limits.max_consumers == expected


def test_empty_admin_token_means_none() -> None:
    assert load(env={"UNIFROST_ADMIN_TOKEN": ""}).admin_token is None


def test_choices_are_case_insensitive() -> None:
    settings = load(env={"UNIFROST_LOG__LEVEL": "DEBUG", "UNIFROST_EVENT_NAME": "Topic"})
    assert settings.log.level == "debug"
    assert settings.event_name == "topic"


# --- addresses ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "address", "shown"),
    [
        ("example.org:80", Address("example.org", 80), "example.org:80"),
        ("127.0.0.1:0", Address("127.0.0.1", 0), "127.0.0.1:0"),
        ("[::]:8080", Address("::", 8080), "[::]:8080"),
        ("[::1]:65535", Address("::1", 65535), "[::1]:65535"),
        ("[2001:db8::5]:443", Address("2001:db8::5", 443), "[2001:db8::5]:443"),
    ],
)
def test_address_forms(text: str, address: Address, shown: str) -> None:
    settings = load(overrides={"listen": text})
    assert settings.listen == address
    assert str(settings.listen) == shown


@pytest.mark.parametrize(
    "text", ["8080", ":8080", "host", "::1:8080", "[not-v6]:80", "[::1]8080", "h:65536", "h:x"]
)
def test_bad_addresses_are_problems(text: str) -> None:
    [problem] = problems_for(overrides={"listen": text})
    assert problem.startswith("listen: invalid ")


# --- file and layering ----------------------------------------------------


def test_yaml_file_nested_values(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
broker: kafka://broker:9092
listen: "[::]:9000"
heartbeat: 5
consumer_ttl: 2m
buffer:
  max_messages: 5
  max_bytes: 64KiB
limits:
  max_consumers: 10
client_subscriptions:
  enabled: yes
  allow: [news.*, weather.*]
cors_origins: https://a.example, https://b.example
trusted_proxies:
  - 10.0.0.0/8
log:
  level: warning
kafka:
  client_id: edge-1
""",
    )
    settings = load(path)
    assert settings.broker == "kafka://broker:9092"
    assert settings.listen == Address("::", 9000)
    assert settings.heartbeat == 5.0
    assert settings.consumer_ttl == 120.0
    assert settings.buffer == BufferSettings(max_messages=5, max_bytes=65536)
    assert settings.limits.max_consumers == 10
    assert settings.client_subscriptions.enabled is True
    assert settings.client_subscriptions.allow == ("news.*", "weather.*")
    assert settings.cors_origins == ("https://a.example", "https://b.example")
    assert settings.trusted_proxies == (IPv4Network("10.0.0.0/8"),)
    assert settings.log.level == "warning"
    assert settings.kafka.client_id == "edge-1"


def test_empty_file_and_empty_section_mean_defaults(tmp_path: Path) -> None:
    assert load(write_config(tmp_path, "# nothing here\n")) == Settings()
    assert load(write_config(tmp_path, "buffer:\n")) == Settings()


def test_env_overrides_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "buffer:\n  max_messages: 5\nlog:\n  level: error\n")
    settings = load(path, env={"UNIFROST_BUFFER__MAX_MESSAGES": "50"})
    assert settings.buffer.max_messages == 50
    assert settings.log.level == "error"


def test_overrides_override_env() -> None:
    env = {"UNIFROST_CONSUMER_TTL": "30s", "UNIFROST_RETRY": "1s"}
    settings = load(env=env, overrides={"consumer_ttl": "90"})
    assert settings.consumer_ttl == 90.0
    assert settings.retry == 1.0


def test_later_layer_can_fix_an_earlier_bad_value(tmp_path: Path) -> None:
    path = write_config(tmp_path, "heartbeat: soon\n")
    assert load(path, env={"UNIFROST_HEARTBEAT": "10s"}).heartbeat == 10.0


def test_none_override_means_flag_not_given() -> None:
    settings = load(env={"UNIFROST_HEARTBEAT": "7"}, overrides={"heartbeat": None})
    assert settings.heartbeat == 7.0


def test_env_keys_are_case_insensitive_and_prefix_filtered() -> None:
    env = {"UNIFROST_log__Level": "debug", "HOME": "/root", "OTHER_DEMO": "x"}
    assert load(env=env).log.level == "debug"


def test_env_none_reads_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIFROST_RETRY", "250ms")
    assert load_settings().retry == 0.25


# --- problems -------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("broker", "localhost", "broker: invalid broker URL 'localhost'"),
        (
            "consumer_ttl",
            "abc",
            "consumer_ttl: invalid duration 'abc' (use 500ms, 15s, 2m or seconds)",
        ),
        ("heartbeat", "0s", "heartbeat: must be greater than 0"),
        ("drain_timeout", "-3", "drain_timeout: invalid duration '-3'"),
        ("event_name", "data", "event_name: expected one of message, topic, got 'data'"),
        ("event_loop", "trio", "event_loop: expected one of asyncio, uvloop, got 'trio'"),
        ("buffer.max_messages", "lots", "buffer.max_messages: expected an integer, got 'lots'"),
        ("buffer.max_messages", "0", "buffer.max_messages: must be at least 1"),
        ("buffer.max_bytes", "big", "buffer.max_bytes: invalid size 'big'"),
        ("max_write_buffer", "0", "max_write_buffer: must be at least 1 byte"),
        ("max_message_bytes", "1.5", "max_message_bytes: invalid size '1.5'"),
        ("limits.max_consumers", "-1", "limits.max_consumers: must be at least 1, or 0"),
        ("limits.max_subscriptions_per_consumer", "0", "limits.max_subscriptions_per_consumer:"),
        ("auto_create_consumers", "maybe", "auto_create_consumers: expected a boolean"),
        ("client_subscriptions.enabled", "2", "client_subscriptions.enabled: expected a boolean"),
        ("trusted_proxies", "10.0.0.0/8, nope", "trusted_proxies: invalid IP or CIDR 'nope'"),
        ("log.format", "xml", "log.format: expected one of json, console, got 'xml'"),
        ("log.level", "trace", "log.level: expected one of debug, info, warning, error"),
        ("rabbitmq.exchange", "", "rabbitmq.exchange: must not be empty"),
        ("kafka.client_id", " ", "kafka.client_id: must not be empty"),
        (
            "kafka.security_protocol",
            "TLS",
            "kafka.security_protocol: expected one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL,"
            " got 'TLS'",
        ),
        (
            "kafka.sasl_mechanism",
            "GSSAPI",
            "kafka.sasl_mechanism: expected one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512,"
            " got 'GSSAPI'",
        ),
        ("kafka.ssl_cafile", "/nonexistent/ca.pem", "kafka.ssl_cafile: no such file"),
        ("kafka.ssl_certfile", "/nonexistent/c.pem", "kafka.ssl_certfile: no such file"),
        ("kafka.ssl_keyfile", "/nonexistent/k.pem", "kafka.ssl_keyfile: no such file"),
        ("admin_listen", "nowhere", "admin_listen: invalid address 'nowhere'"),
    ],
)
def test_bad_value_names_its_key(key: str, value: str, expected: str) -> None:
    [problem] = problems_for(overrides={key: value})
    assert problem.startswith(expected)


def test_wrong_yaml_types_are_problems(tmp_path: Path) -> None:
    path = write_config(
        tmp_path,
        """
buffer:
  max_messages: true
  max_bytes: 1.5
admin_token: [a, b]
demo: 7
heartbeat: yes
cors_origins: [1, 2]
""",
    )
    assert problems_for(path) == [
        "admin_token: expected a string, got ['a', 'b']",
        "heartbeat: invalid duration True (use 500ms, 15s, 2m or seconds)",
        "buffer.max_messages: expected an integer, got True",
        "buffer.max_bytes: invalid size 1.5 (use 1MiB, 64KiB, 1MB or bytes)",
        "cors_origins: expected a list of strings or a comma-separated string, got [1, 2]",
        "demo: expected a boolean (true/false/yes/no/on/off/1/0), got 7",
    ]


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    path = write_config(tmp_path, "heartbeat: soon\n")
    env = {"UNIFROST_BUFFER__MAX_MESSAGES": "lots"}
    with pytest.raises(ConfigError) as info:
        load(path, env=env, overrides={"log.level": "loud"})
    assert [line.split(":")[0] for line in info.value.problems] == [
        "heartbeat",
        "buffer.max_messages",
        "log.level",
    ]
    assert str(info.value) == "\n".join(info.value.problems)


def test_unknown_keys_from_every_source(tmp_path: Path) -> None:
    path = write_config(tmp_path, "foo:\n  bar: 1\nbuffer:\n  max_msgs: 5\n")
    problems = problems_for(path, env={"UNIFROST_NOPE": "1"}, overrides={"log.colour": "red"})
    assert problems == [
        "unknown key 'foo.bar'",
        "unknown key 'buffer.max_msgs'",
        "unknown key 'nope'",
        "unknown key 'log.colour'",
    ]


def test_section_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = write_config(tmp_path, "buffer: 5\n")
    assert problems_for(path) == ["buffer: expected a mapping of settings, got 5"]


def test_unparseable_yaml_is_one_problem_naming_the_file(tmp_path: Path) -> None:
    path = write_config(tmp_path, "listen: [unclosed\nbroker: x\n")
    [problem] = problems_for(path)
    assert problem.startswith(f"{path}: invalid YAML: ")
    assert "\n" not in problem


def test_yaml_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    path = write_config(tmp_path, "- a\n- b\n")
    assert problems_for(path) == [f"{path}: top level must be a mapping of keys, got list"]


def test_missing_file_is_a_problem_naming_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.yaml")
    [problem] = problems_for(path)
    assert problem.startswith(f"{path}: cannot read config file")


def test_file_problem_does_not_hide_other_problems(tmp_path: Path) -> None:
    path = str(tmp_path / "absent.yaml")
    assert len(problems_for(path, env={"UNIFROST_RETRY": "later"})) == 2


# --- kafka ------------------------------------------------------------------


def test_kafka_security_settings_from_file_and_env(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / name for name in ("ca.pem", "client.pem", "client.key"))
    for path in (ca, cert, key):
        path.write_text("-----BEGIN-----\n", encoding="utf-8")
    config = write_config(
        tmp_path,
        f"""
kafka:
  client_id: edge-7
  security_protocol: sasl_ssl
  sasl_mechanism: scram-sha-512
  sasl_username: relay
  ssl_cafile: {ca}
  ssl_certfile: {cert}
  ssl_keyfile: {key}
""",
    )
    settings = load(config, env={"UNIFROST_KAFKA__SASL_PASSWORD": " pass word "})
    assert settings.kafka == KafkaSettings(
        client_id="edge-7",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="relay",
        sasl_password=" pass word ",  # kept verbatim: spaces may be part of a password
        ssl_cafile=str(ca),
        ssl_certfile=str(cert),
        ssl_keyfile=str(key),
    )
    assert "pass word" not in repr(settings)


def test_kafka_empty_optional_values_mean_unset() -> None:
    keys = ("sasl_username", "sasl_password", "ssl_cafile", "ssl_certfile", "ssl_keyfile")
    settings = load(overrides={f"kafka.{key}": "" for key in keys})
    assert settings.kafka == KafkaSettings()


def test_kafka_password_of_the_wrong_type_is_not_echoed(tmp_path: Path) -> None:
    path = write_config(tmp_path, "kafka:\n  sasl_password: 987654321\n")
    [problem] = problems_for(path)
    assert problem == "kafka.sasl_password: expected a string (got a value of type int)"
    assert "987654321" not in problem


def test_kafka_problems_are_all_reported(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "kafka:\n  security_protocol: ssl3\n  sasl_mechanism: 7\n  ssl_cafile: nope\n"
    )
    assert [line.split(":")[0] for line in problems_for(path)] == [
        "kafka.security_protocol",
        "kafka.sasl_mechanism",
        "kafka.ssl_cafile",
    ]


# --- admin exposure -------------------------------------------------------


@pytest.mark.parametrize("listen", ["0.0.0.0:8081", "[::]:8081", "admin.example:8081"])
def test_non_loopback_admin_without_token_is_refused(listen: str) -> None:
    shown = str(load(overrides={"listen": listen}).listen)
    assert problems_for(overrides={"admin_listen": listen}) == [
        f"admin_listen: refusing non-loopback admin listener {shown} without admin_token"
    ]


def test_empty_token_does_not_unlock_non_loopback_admin() -> None:
    env = {"UNIFROST_ADMIN_LISTEN": "0.0.0.0:8081", "UNIFROST_ADMIN_TOKEN": ""}
    assert len(problems_for(env=env)) == 1


def test_non_loopback_admin_with_token_is_accepted() -> None:
    env = {"UNIFROST_ADMIN_LISTEN": "0.0.0.0:9001", "UNIFROST_ADMIN_TOKEN": "s3cret"}
    settings = load(env=env)
    assert settings.admin_listen == Address("0.0.0.0", 9001)
    assert settings.admin_token == "s3cret"


@pytest.mark.parametrize("listen", ["127.0.0.1:0", "127.9.9.9:8081", "[::1]:8081", "LOCALHOST:1"])
def test_loopback_admin_needs_no_token(listen: str) -> None:
    assert load(overrides={"admin_listen": listen}).admin_token is None


def test_event_loop_uvloop_is_taken_when_installed() -> None:
    assert load(env={"UNIFROST_EVENT_LOOP": "UVLoop"}).event_loop == "uvloop"


def test_event_loop_uvloop_without_the_package_is_a_clear_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *args: None if name == "uvloop" else real_find_spec(name, *args),
    )
    with pytest.raises(ConfigError) as raised:
        load(env={"UNIFROST_EVENT_LOOP": "uvloop"})
    assert raised.value.problems == [
        "event_loop: uvloop is not installed (pip install 'unifrost[uvloop]')"
    ]
