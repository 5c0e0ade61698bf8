"""The generated reference pages leave nothing undocumented and say what the code does.

Each check walks the code on its own (the settings dataclasses, a metrics
registry, the source of every log call) rather than trusting the renderer's
walk, then holds the pages and the registries against it.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from service import cli, config, log_events, reference
from service.metrics import DETAILS, Metrics
from tests.support import SseClient, captured_logs, http, log_records, running_server

SERVICE = Path(__file__).resolve().parent.parent / "service"


def test_mkdocs_hook_adds_the_generated_pages() -> None:
    from mkdocs.config import load_config
    from mkdocs.structure.files import Files

    site = load_config(str(SERVICE.parent / "mkdocs.yml"))
    files = site.plugins.on_files(Files([]), config=site)
    pages = {f.src_uri: f.content_string for f in files}
    assert pages == reference.pages()
    assert sorted(pages) == [
        "reference/configuration.md",
        "reference/logs.md",
        "reference/metrics.md",
    ]


# --- configuration ----------------------------------------------------------------------


def schema_fields(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field[Any]]]:
    """Every field reachable from ``cls``, sections included, by dotted name."""
    defaults = cls()
    for f in dataclasses.fields(cls):
        yield prefix + f.name, f
        value = getattr(defaults, f.name)
        if dataclasses.is_dataclass(value):
            yield from schema_fields(type(value), f"{prefix}{f.name}.")


def sections() -> set[str]:
    return {name.rpartition(".")[0] for name, _ in schema_fields(config.Settings)} - {""}


def leaf_keys() -> list[str]:
    return [name for name, _ in schema_fields(config.Settings) if name not in sections()]


def test_every_settings_field_has_a_description() -> None:
    undocumented = [
        name
        for name, f in schema_fields(config.Settings)
        if len(str(f.metadata.get("doc", "")).strip()) < 20
    ]
    assert undocumented == [], f"add field(metadata=_doc(...)) to: {undocumented}"


def test_every_field_is_a_key_and_every_key_says_what_it_accepts() -> None:
    parsers = config.key_parsers()
    assert sorted(leaf_keys()) == sorted(parsers)
    vague = [key for key, parse in parsers.items() if not (parse.__doc__ or "").strip()]
    assert vague == [], f"give these keys' parsers a docstring: {vague}"


def test_configuration_page_documents_every_key() -> None:
    page = reference.configuration_reference()
    for key, f in schema_fields(config.Settings):
        if key in sections():
            assert f"{{#{key}}}" in page, key  # a section heading
            continue
        env = "UNIFROST_" + key.upper().replace(".", "__")
        heading = f"### `{key}` {{#{key}}}\n"
        assert heading in page, f"no heading for {key}"
        block = page.split(heading, 1)[1].split("\n### ", 1)[0]
        assert " ".join(f.metadata["doc"].split()) in block, key
        assert f"- **Environment:** `{env}`" in block, key
        assert "- **Accepts:** " in block and "- **Default:** " in block, key
    assert "``" not in page  # reStructuredText literals were turned into Markdown


@pytest.mark.parametrize("key", [k.key for k in reference.config_keys()])
def test_shown_default_is_what_the_server_uses(key: str) -> None:
    shown = next(k for k in reference.config_keys() if k.key == key)
    actual = config.Settings()
    for part in key.split("."):
        actual = getattr(actual, part)
    if actual is None:
        assert shown.default == ""  # rendered "unset"
        return
    # The page's default, given through the page's environment variable, is the default.
    loaded: Any = config.load_settings(
        env={shown.env: "" if shown.default == "[]" else shown.default}
    )
    for part in key.split("."):
        loaded = getattr(loaded, part)
    assert loaded == actual, (shown.default, actual)


# A value other than the default for each key a flag sets (--demo takes none).
FLAG_VALUES = {
    "broker": ("memory://flags", "memory://flags"),
    "listen": ("127.0.0.1:18080", config.Address("127.0.0.1", 18080)),
    "admin_listen": ("127.0.0.1:18081", config.Address("127.0.0.1", 18081)),
    "admin_token": ("t0ken", "t0ken"),
    "consumer_ttl": ("7s", 7.0),
    "heartbeat": ("2500ms", 2.5),
    "log.format": ("console", "console"),
    "log.level": ("warning", "warning"),
}
NON_KEY_OPTIONS = {"help", "config", "check_config"}


def test_documented_flags_set_their_keys(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    documented = {k.key: k.flag for k in reference.config_keys() if k.flag}
    assert set(documented) == {*FLAG_VALUES, "demo"}
    serve_options = {a.dest for a in reference._serve_parser()._actions if a.option_strings}
    undocumented = serve_options - NON_KEY_OPTIONS - {k.replace(".", "_") for k in documented}
    assert undocumented == set(), "a serve flag sets no key the page knows"
    for name in [n for n in os.environ if n.startswith("UNIFROST_")]:
        monkeypatch.delenv(name)
    loaded: list[config.Settings] = []

    def load_settings(*args: Any, **kwargs: Any) -> config.Settings:
        loaded.append(config.load_settings(*args, **kwargs))
        return loaded[-1]

    monkeypatch.setattr(cli, "load_settings", load_settings)
    argv = ["serve", "--check-config", documented["demo"]]
    for key, (text, _value) in FLAG_VALUES.items():
        argv += [str(documented[key]), text]
    assert cli.main(argv) == 0, capsys.readouterr().err
    settings: Any = loaded[-1]
    assert settings.demo is True
    for key, (_text, value) in FLAG_VALUES.items():
        actual = settings
        for part in key.split("."):
            actual = getattr(actual, part)
        assert actual == value, (documented[key], actual)


# --- metrics ----------------------------------------------------------------------------


def test_every_metric_has_help_and_details() -> None:
    families = list(Metrics(CollectorRegistry()).registry.collect())
    names = {family.name for family in families}
    assert len(names) >= 20
    assert [f.name for f in families if not f.documentation.strip()] == []
    assert sorted(names - DETAILS.keys()) == [], "add an explanation to metrics.DETAILS"
    assert sorted(DETAILS.keys() - names) == [], "metrics.DETAILS names a metric that is gone"
    assert [name for name in names if len(DETAILS[name].split()) < 8] == []


async def test_metrics_page_lists_every_series_a_scrape_exposes() -> None:
    page = reference.metrics_reference()
    async with running_server() as running:
        consumer_id = await running.create_consumer(["news"])
        client = await running.stream(consumer_id)
        await client.opening()
        await running.publish("news", "hello")
        await client.data_frame()
        client.close()
        await running.api("GET", "/nope")
        scrape = (await running.api("GET", "/metrics")).text
    families = [f for f in text_string_to_metric_families(scrape) if f.name.startswith("unifrost")]
    assert len(families) >= 20
    docs = {m.name: m for m in reference.metric_docs()}
    docs |= {m.exposed: m for m in docs.values()}  # the text format calls an Info "*_info"
    for family in families:
        doc = docs[family.name]
        assert doc.help == family.documentation
        assert f"{{#{doc.exposed}}}" in page, doc.exposed
        for sample in family.samples:
            assert sample.name in doc.series, (sample.name, doc.series)
            for label, value in sample.labels.items():
                if label == "le":
                    continue
                known = dict(doc.labels)[label]
                assert not known or value in known, (family.name, label, value, known)
    for doc in reference.metric_docs():
        assert f"## `{doc.exposed}` {{#{doc.exposed}}}" in page
        assert doc.details in page


# --- log events -------------------------------------------------------------------------

LEVELS = {
    "debug": "debug",
    "info": "info",
    "warning": "warning",
    "warn": "warning",
    "error": "error",
    "exception": "error",
    "critical": "critical",
}


@dataclasses.dataclass(frozen=True)
class Emission:
    where: str
    event: str
    level: str
    fields: frozenset[str]


def _logger_names(tree: ast.Module) -> set[str]:
    """Module-level names bound to ``get_logger(...)`` (service.log or structlog)."""
    names = set()
    for node in tree.body:
        if isinstance(node, ast.Assign) and _is_get_logger(node.value):
            names |= {t.id for t in node.targets if isinstance(t, ast.Name)}
    return names


def _is_get_logger(node: ast.AST) -> bool:
    if not isinstance(node, ast.Call):
        return False
    func = node.func
    return (isinstance(func, ast.Name) and func.id == "get_logger") or (
        isinstance(func, ast.Attribute) and func.attr == "get_logger"
    )


def _returned_dict_keys(trees: list[ast.Module]) -> dict[str, frozenset[str]]:
    """``name -> keys`` of functions that return one literal dict (``**conn.as_log()``)."""
    keys: dict[str, list[frozenset[str]]] = {}
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                returns = [n for n in ast.walk(node) if isinstance(n, ast.Return)]
                if len(returns) == 1 and isinstance(returns[0].value, ast.Dict):
                    literal = returns[0].value.keys
                    if all(
                        isinstance(k, ast.Constant) and isinstance(k.value, str) for k in literal
                    ):
                        found = frozenset(
                            str(k.value) for k in literal if isinstance(k, ast.Constant)
                        )
                        keys.setdefault(node.name, []).append(found)
    return {name: found[0] for name, found in keys.items() if len(found) == 1}


def emitted_events() -> tuple[list[Emission], list[str]]:
    """Every event logged in service/, and the calls this scan cannot read."""
    sources = {
        path: ast.parse(path.read_text(), str(path)) for path in sorted(SERVICE.rglob("*.py"))
    }
    dict_keys = _returned_dict_keys(list(sources.values()))
    emissions: list[Emission] = []
    unreadable: list[str] = []
    for path, tree in sources.items():
        loggers = _logger_names(tree)
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            target = node.func.value
            if not (isinstance(target, ast.Name) and target.id in loggers) and not _is_get_logger(
                target
            ):
                continue
            where = f"{path.relative_to(SERVICE.parent)}:{node.lineno}"
            method = node.func.attr
            if method in ("is_enabled_for", "get_effective_level"):
                continue  # asks about the level, logs nothing
            if method not in LEVELS:
                unreadable.append(f"{where}: {method}() (only level methods are read)")
                continue
            first = node.args[0] if node.args else None
            if not (isinstance(first, ast.Constant) and isinstance(first.value, str)):
                unreadable.append(f"{where}: the event name is not a string literal")
                continue
            fields = {kw.arg for kw in node.keywords if kw.arg is not None}
            for kw in node.keywords:
                spread = kw.value
                if kw.arg is not None:
                    continue
                if (
                    isinstance(spread, ast.Call)
                    and isinstance(spread.func, ast.Attribute)
                    and spread.func.attr in dict_keys
                ):
                    fields |= dict_keys[spread.func.attr]
                else:
                    unreadable.append(f"{where}: cannot see the fields of **{ast.unparse(spread)}")
            if method == "exception":
                fields.add(log_events.EXCEPTION_FIELD)
            emissions.append(Emission(where, first.value, LEVELS[method], frozenset(fields)))
    return emissions, unreadable


def test_every_log_call_is_readable_and_registered() -> None:
    emissions, unreadable = emitted_events()
    assert unreadable == []
    assert len(emissions) >= 30  # the scan found the calls, not nothing
    registry = log_events.BY_NAME
    assert len(registry) == len(log_events.EVENTS), "an event is registered twice"
    unknown = sorted({f"{e.event} ({e.where})" for e in emissions if e.event not in registry})
    assert unknown == [], "add these events to service/log_events.py"
    never = sorted(registry.keys() - {e.event for e in emissions})
    assert never == [], "these registered events are never logged"


def test_registered_levels_and_fields_match_the_log_calls() -> None:
    emissions, _ = emitted_events()
    problems = []
    for event in log_events.EVENTS:
        sites = [e for e in emissions if e.event == event.name]
        if {e.level for e in sites} != set(event.levels):
            problems.append(f"{event.name}: logged at {sorted({e.level for e in sites})}")
        allowed = set(event.fields) | set(event.optional)
        for site in sites:
            if site.fields - allowed:
                problems.append(f"{site.where}: unregistered {sorted(site.fields - allowed)}")
            if set(event.fields) - site.fields:
                problems.append(f"{site.where}: lacks {sorted(set(event.fields) - site.fields)}")
        unused = set(event.optional) - set().union(*(e.fields for e in sites))
        if unused:
            problems.append(f"{event.name}: optional {sorted(unused)} never logged")
        if not event.description.strip() or not all(
            text.strip() for text in [*event.fields.values(), *event.optional.values()]
        ):
            problems.append(f"{event.name}: a description is missing")
    assert problems == []


def test_logs_page_documents_every_event_and_field() -> None:
    page = reference.log_events_reference()
    for event in log_events.EVENTS:
        heading = f"## `{event.name}` {{#{event.name}}}\n"
        assert heading in page, f"no heading for {event.name}"
        block = page.split(heading, 1)[1].split("\n## ", 1)[0]
        assert event.description in block
        for name, text in [*event.fields.items(), *event.optional.items()]:
            assert f"| `{name}` |" in block and text in block, (event.name, name)
    for name in log_events.COMMON_FIELDS:
        assert f"| `{name}` |" in page
    assert "{#libraries}" in page  # records of Tornado and the client libraries


async def test_lines_a_running_server_writes_match_the_registry() -> None:
    with captured_logs() as buffer:
        async with running_server() as running:
            consumer_id = await running.create_consumer(["news"])
            await running.api("POST", f"/consumers/{consumer_id}/subscriptions", {"add": ["x"]})
            client: SseClient = await running.stream(consumer_id)
            await client.opening()
            await running.publish("news", "hello")
            await client.data_frame()
            await running.api("DELETE", f"/consumers/{consumer_id}")
            assert await client.at_eof()
            await http(running.admin, "GET", "/consumers")
    records = log_records(buffer.getvalue())
    seen = {str(r["event"]) for r in records}
    wanted = {
        "server.started",
        "broker.connected",
        "consumer.created",
        "subscription.changed",
        "http.request",
        "stream.opened",
        "stream.closed",
        "consumer.evicted",
        "server.stopping",
        "server.stopped",
    }
    assert wanted <= seen, wanted - seen
    for record in records:
        event = log_events.BY_NAME.get(str(record["event"]))
        assert event is not None or not re.fullmatch(r"[a-z_]+\.[a-z_]+", record["event"]), record
        if event is None:
            continue
        assert record["level"] in event.levels, record
        keys = set(record) - set(log_events.COMMON_FIELDS)
        assert set(event.fields) <= keys <= set(event.fields) | set(event.optional), record
