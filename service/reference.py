"""The generated reference pages of the documentation site, rendered from the code.

Configuration keys come from the settings dataclasses and their parsers
(:mod:`service.config`), metrics from a fresh :class:`~service.metrics.Metrics`,
log events from :mod:`service.log_events`. ``scripts/docs_reference.py`` adds
the pages to the mkdocs build; the tests check nothing is left undocumented.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.metrics import MetricWrapperBase

from service import cli, config
from service import log_events as events
from service import metrics as metrics_module
from service.tally import TallyCounter, TallyGauge, TallyHistogram

_Metric = MetricWrapperBase | TallyCounter | TallyGauge | TallyHistogram
_METRIC_TYPES = (MetricWrapperBase, TallyCounter, TallyGauge, TallyHistogram)

# --- configuration ----------------------------------------------------------------


class ConfigKey(NamedTuple):
    """One configuration key as the reference page shows it."""

    key: str  # dotted name, e.g. "buffer.max_messages"
    accepts: str  # what the key's parser accepts
    default: str  # the default, in the key's own notation ("" when unset)
    env: str
    flag: str | None
    doc: str


def config_keys() -> list[ConfigKey]:
    """Every key reachable from :class:`~service.config.Settings`, in declaration order."""
    parsers = config.key_parsers()
    flags = cli_flags()
    keys = []
    for key, value, doc in _settings_fields(config.Settings(), ""):
        parse = parsers[key]
        keys.append(
            ConfigKey(
                key=key,
                accepts=_markdown(inspect.getdoc(parse) or ""),
                default=_shown_default(value, parse),
                env=config.ENV_PREFIX + key.upper().replace(".", "__"),
                flag=flags.get(key),
                doc=doc,
            )
        )
    return keys


def config_sections() -> list[tuple[str, str]]:
    """``(section, description)`` for each nested section of the settings."""
    return [
        (f.name, _field_doc(f))
        for f in dataclasses.fields(config.Settings)
        if dataclasses.is_dataclass(getattr(config.Settings(), f.name))
    ]


def _settings_fields(settings: Any, prefix: str) -> Iterator[tuple[str, Any, str]]:
    """``(dotted key, default value, description)`` for each leaf field."""
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if dataclasses.is_dataclass(value):
            yield from _settings_fields(value, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, value, _field_doc(f)


def _field_doc(f: dataclasses.Field[Any]) -> str:
    return str(f.metadata.get("doc", ""))


def cli_flags() -> dict[str, str]:
    """``unifrost serve`` flags that set a key, by dotted key (``--log-level`` -> log.level)."""
    keys = config.key_parsers()
    flags = {}
    for action in _serve_parser()._actions:  # argparse has no public way to list them
        for candidate in (action.dest, action.dest.replace("_", ".", 1)):
            if candidate in keys and action.option_strings:
                flags[candidate] = action.option_strings[0]
    return flags


def _serve_parser() -> argparse.ArgumentParser:
    for action in cli.build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            serve: argparse.ArgumentParser = action.choices["serve"]
            return serve
    raise LookupError("unifrost has no serve command")


_SIZE_UNITS = (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024))


def _shown_default(value: object, parse: Callable[[object], object]) -> str:
    """``value`` as a user would write it, in the key's notation when the key accepts that."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple) and not hasattr(value, "_fields"):  # a list, not an Address
        return ", ".join(str(item) for item in value) or "[]"
    candidates = []
    if isinstance(value, float):
        candidates.append(f"{value:g}s")
    elif isinstance(value, int):
        candidates += [f"{value // size}{unit}" for unit, size in _SIZE_UNITS if value % size == 0]
    for text in candidates:  # "1MiB" only for a size key: a count key would refuse it
        try:
            if parse(text) == value:
                return text
        except ValueError:
            pass
    return f"{value:g}" if isinstance(value, float) else str(value)


def configuration_reference() -> str:
    """The configuration reference page (Markdown)."""
    keys = config_keys()
    lines = [
        "# Configuration keys",
        "",
        "Every key unifrost reads, generated from its settings schema. The "
        "[configuration guide](../configuration.md) explains how to use them together.",
        "",
        "Values come from three places, later ones winning: a YAML file "
        "(`unifrost serve --config FILE`), environment variables `UNIFROST_<KEY>` (nested "
        "keys joined by `__`, e.g. `UNIFROST_BUFFER__MAX_MESSAGES=500` for "
        "`buffer: {max_messages: 500}`) and command-line flags. Durations are written "
        "`500ms`, `15s`, `2m`, `1h` or as seconds; sizes `64KiB`, `1MiB`, `1MB` or as bytes "
        "(KiB and MiB are powers of 1024, KB and MB of 1000); lists in YAML, or "
        "comma-separated in the environment. Unknown keys and invalid values stop the "
        "server with exit code 2 and one line per problem, naming the key; "
        "`unifrost serve --check-config` runs the same checks and exits.",
        "",
        "Broker-specific options other than the `kafka.*` and `rabbitmq.*` sections go in "
        "the broker URL: see [Brokers](../brokers/index.md).",
        "",
        "| Key | Default | Environment variable | Flag |",
        "|---|---|---|---|",
    ]
    for k in keys:
        lines.append(
            f"| [`{k.key}`](#{k.key}) | {_code(k.default) or 'unset'} | `{k.env}` "
            f"| {_code(k.flag or '')} |"
        )
    sections = [("", "Keys at the top level of the file."), *config_sections()]
    for section, about in sections:
        members = [k for k in keys if k.key.rpartition(".")[0] == section]
        title = f"`{section}.*`" if section else "General"
        lines += ["", f"## {title} {{#{section or 'general'}}}", "", about]
        for k in members:
            lines += _key_block(k)
    return "\n".join(lines) + "\n"


def _key_block(k: ConfigKey) -> list[str]:
    facts = [
        f"- **Accepts:** {k.accepts}",
        f"- **Default:** {_code(k.default) or 'unset'}",
        f"- **Environment:** `{k.env}`",
    ]
    if k.flag:
        facts.append(f"- **Flag:** `{k.flag}`")
    return ["", f"### `{k.key}` {{#{k.key}}}", "", k.doc, "", *facts]


# --- metrics ----------------------------------------------------------------------


class MetricDoc(NamedTuple):
    """One metric family as the reference page shows it."""

    name: str  # the name given to the constructor, e.g. "unifrost_connections_opened"
    exposed: str  # the main series name, e.g. "unifrost_connections_opened_total"
    type: str
    help: str
    details: str
    series: tuple[str, ...]
    labels: tuple[tuple[str, tuple[str, ...]], ...]  # (label, known values)
    buckets: tuple[float, ...]


_SERIES_SUFFIXES = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "info": ("_info",),
}


def metric_docs() -> list[MetricDoc]:
    """Every metric family of :class:`~service.metrics.Metrics`, in declaration order."""
    metrics = metrics_module.Metrics(CollectorRegistry())
    sampled = _sampled_labels(metrics.registry)
    docs = []
    for wrapper in vars(metrics).values():
        if not isinstance(wrapper, _METRIC_TYPES):
            continue
        family = next(iter(wrapper.describe()))
        series = tuple(family.name + suffix for suffix in _SERIES_SUFFIXES[family.type])
        present = sampled.get(family.name, {})
        # prometheus_client has no public accessor for label names and buckets;
        # an Info's labels only exist once .info() set them.
        names = tuple(_label_names(wrapper)) or tuple(present)
        labels = tuple(
            (label, () if family.type == "info" else present.get(label) or _label_values(label))
            for label in names
        )
        upper = _upper_bounds(wrapper)
        docs.append(
            MetricDoc(
                name=family.name,
                exposed=series[0] if family.type != "histogram" else family.name,
                type="gauge" if family.type == "info" else family.type,
                help=family.documentation,
                details=" ".join(metrics_module.DETAILS.get(family.name, "").split()),
                series=series,
                labels=labels,
                buckets=tuple(b for b in upper if b != float("inf")),
            )
        )
    return docs


def _label_names(wrapper: _Metric) -> Sequence[str]:
    if isinstance(wrapper, (TallyCounter, TallyGauge, TallyHistogram)):
        return wrapper.labelnames
    return wrapper._labelnames  # type: ignore[no-any-return]


def _upper_bounds(wrapper: _Metric) -> Sequence[float]:
    if isinstance(wrapper, TallyHistogram):
        return wrapper.bounds
    if isinstance(wrapper, Histogram):
        return wrapper._upper_bounds
    return ()


def _sampled_labels(registry: CollectorRegistry) -> dict[str, dict[str, tuple[str, ...]]]:
    """Label values that exist from the start (initialised up front), by family and label."""
    found: dict[str, dict[str, dict[str, None]]] = {}
    for family in registry.collect():
        for sample in family.samples:
            for label, value in sample.labels.items():
                if label != "le":
                    found.setdefault(family.name, {}).setdefault(label, {})[value] = None
    return {
        family: {label: tuple(values) for label, values in labels.items()}
        for family, labels in found.items()
    }


def _label_values(label: str) -> tuple[str, ...]:
    if label == "handler":
        return handler_names()
    return ()  # open-ended, like the HTTP status code


def handler_names() -> tuple[str, ...]:
    """Every ``handler`` label value: the ``name`` of each route's handler class."""
    import service.app  # noqa: F401  (imports every handler module)
    from service.web.base import BaseHandler

    names: dict[str, None] = {}
    pending = list(BaseHandler.__subclasses__())
    while pending:
        cls = pending.pop(0)
        pending += cls.__subclasses__()
        if "name" in vars(cls):
            names[cls.name] = None
    return tuple(sorted(names))


def metrics_reference() -> str:
    """The metrics reference page (Markdown)."""
    docs = metric_docs()
    lines = [
        "# Metrics",
        "",
        "Every metric unifrost exports, generated from its metric definitions. "
        "`GET /metrics` on the admin listener serves them in the Prometheus text format "
        "(with `Authorization: Bearer <admin_token>` when a token is set); "
        "[Operations](../operations.md) shows what to watch and alert on.",
        "",
        "No label ever carries a consumer id or a topic name, so the number of series "
        "stays fixed however many clients connect. Label values that are known in advance "
        "exist from the first scrape, at 0. Fan-out counters grow once per broker message, "
        "by the number of streams reached. Counters have no `_created` series.",
        "",
        "| Metric | Type | Labels | Help |",
        "|---|---|---|---|",
    ]
    for m in docs:
        label_names = ", ".join(f"`{label}`" for label, _ in m.labels) or "—"
        lines.append(f"| [`{m.exposed}`](#{m.exposed}) | {m.type} | {label_names} | {m.help} |")
    for m in docs:
        facts = [f"- **Type:** {m.type}", f"- **Series:** {', '.join(_code(s) for s in m.series)}"]
        for label, values in m.labels:
            shown = ", ".join(_code(v) for v in values) if values else "not fixed in advance"
            facts.append(f"- **Label `{label}`:** {shown}")
        if m.buckets:
            facts.append(f"- **Buckets (seconds):** {', '.join(f'{b:g}' for b in m.buckets)}")
        lines += ["", f"## `{m.exposed}` {{#{m.exposed}}}", "", f"*{m.help}*", "", m.details]
        lines += ["", *facts]
    return "\n".join(lines) + "\n"


# --- log events -------------------------------------------------------------------


def log_events_reference() -> str:
    """The log events reference page (Markdown)."""
    lines = [
        "# Log events",
        "",
        "Every event unifrost logs, generated from its event registry. Each line is one "
        "JSON object on stdout (`log.format: json`, the default when stdout is not a "
        "terminal) or a readable line (`log.format: console`); `log.level` sets the "
        "lowest level written.",
        "",
        "Every line carries:",
        "",
        "| Field | Meaning |",
        "|---|---|",
        *(f"| `{name}` | {text} |" for name, text in events.COMMON_FIELDS.items()),
        "",
        "and then the event's own fields below. A line logged with an exception also "
        f"has `{events.EXCEPTION_FIELD}`, the traceback. Credentials never appear.",
        "",
        "| Event | Level | Fields |",
        "|---|---|---|",
    ]
    for event in events.EVENTS:
        fields = ", ".join(f"`{name}`" for name in (*event.fields, *event.optional)) or "—"
        lines.append(f"| [`{event.name}`](#{event.name}) | {', '.join(event.levels)} | {fields} |")
    for event in events.EVENTS:
        lines += ["", f"## `{event.name}` {{#{event.name}}}", "", event.description, ""]
        lines.append(f"- **Level:** {', '.join(event.levels)}")
        if event.fields or event.optional:
            lines += ["", "| Field | Meaning |", "|---|---|"]
            lines += [f"| `{name}` | {text} |" for name, text in event.fields.items()]
            lines += [
                f"| `{name}` | (on some lines) {text} |" for name, text in event.optional.items()
            ]
    lines += [
        "",
        "## Records of libraries {#libraries}",
        "",
        "Tornado, asyncio and the broker client libraries log through Python's standard "
        "`logging`; their records are written by the same renderer, with the same "
        "`timestamp`, `level` and `event` fields, but their `event` is a free-text "
        "message rather than one of the names above (for example Tornado's "
        '`"Uncaught exception POST /publish"` at `error` level, with `exception`). '
        "Tornado's per-request access log is off: requests are logged as `http.request` "
        "and `stream.*`. The Kafka, RabbitMQ and MQTT client libraries, which log every "
        "retry during an outage, are silenced unless you set their loggers' level "
        "(for example when embedding unifrost); the drivers report outages as `broker.*` "
        "events instead.",
    ]
    return "\n".join(lines) + "\n"


# --- Markdown helpers -------------------------------------------------------------


def _code(text: str) -> str:
    return f"`{text}`" if text else ""


def _markdown(docstring: str) -> str:
    """A docstring's reStructuredText literals (````x````) as Markdown code (```x```)."""
    return re.sub(r"``(.+?)``", r"`\1`", " ".join(docstring.split()))


def pages() -> Mapping[str, str]:
    """Every generated page by its path under ``docs/``."""
    return {
        "reference/configuration.md": configuration_reference(),
        "reference/metrics.md": metrics_reference(),
        "reference/logs.md": log_events_reference(),
    }
