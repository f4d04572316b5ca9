"""README's tables of shared facts agree with the code they describe.

The metrics, log events, folders and settings a reader looks up in README are
read here from the code itself, so a metric, an event, a folder or a setting
added without its row (or a row left behind by one removed) fails a test.

Metrics and log events are found statically, by walking the syntax tree of every
module under ``src/cellwork`` and ``src/learnfeed``, rather than by importing the
modules and reading a ``CollectorRegistry``: most of cellwork's metrics are
registered lazily, on first use (``server_metrics()``, ``http_metrics()``...), and
a log event exists only as an argument of a call, so neither shows up at import
time. The scan follows what the code passes, not what a string looks like:

- a metric is a call to one of prometheus-client's metric classes, to a counter or
  gauge family a custom collector yields (``CounterMetricFamily``,
  ``GaugeMetricFamily``), or to cellwork's ``RequestMetrics``, with imports resolved
  (``collections.Counter`` is not one); its name is a literal, a module constant
  (followed through imports), or a lookup in a module-level dict of them, every value
  of which counts;
- a log event is the first argument of a level method (``.info``, ``.exception``...)
  called on a logger made by ``get_logger("component")`` at module level, or the
  argument after such a method passed as a callback (``callback(_log.info, "x.y")``).

Whatever the scan cannot read (an f-string name, a prometheus-client class other than
``Counter``, ``Gauge``, ``Histogram`` and ``Summary``, a logger used another way) is a
failure, never skipped: then the scan needs extending, or the code a plainer form.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import prometheus_client
from markdown_it import MarkdownIt
from markdown_it.token import Token
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.metrics_core import Metric
from pydantic_settings import BaseSettings

from cellwork import ServiceSettings
from learnfeed.settings import LearnfeedSettings

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PACKAGES = ("cellwork", "learnfeed")


# --- README's tables ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cell:
    """A table cell: its text and the contents of its code spans, in order."""

    text: str
    code: tuple[str, ...]


Row = tuple[Cell, ...]


@dataclass(frozen=True, slots=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[Row, ...]


def _cell(inline: Token) -> Cell:
    children = inline.children or []
    text = "".join(c.content for c in children if c.type in ("text", "code_inline"))
    return Cell(text.strip(), tuple(c.content for c in children if c.type == "code_inline"))


def _tables(tokens: list[Token]) -> list[Table]:
    tables: list[Table] = []
    header: list[str] = []
    rows: list[Row] = []
    row: list[Cell] = []
    in_table = in_head = False
    for token in tokens:
        if token.type == "table_open":
            in_table, header, rows = True, [], []
        elif token.type == "table_close":
            in_table = False
            tables.append(Table(tuple(header), tuple(rows)))
        elif not in_table:
            continue
        elif token.type in ("thead_open", "thead_close"):
            in_head = token.type == "thead_open"
        elif token.type == "tr_open":
            row = []
        elif token.type == "inline":
            if in_head:
                header.append(_cell(token).text)
            else:
                row.append(_cell(token))
        elif token.type == "tr_close" and not in_head:
            rows.append(tuple(row))
    return tables


@cache
def readme_tables() -> dict[str, list[Table]]:
    """The tables of each ``## `` section of README, by section title."""
    tokens = MarkdownIt("commonmark").enable("table").parse((ROOT / "README.md").read_text())
    sections: dict[str, list[Token]] = {}
    current: list[Token] | None = None
    for i, token in enumerate(tokens):
        if token.type == "heading_open" and token.tag in ("h1", "h2"):
            current = sections.setdefault(tokens[i + 1].content, []) if token.tag == "h2" else None
        elif current is not None:
            current.append(token)
    return {title: _tables(section) for title, section in sections.items()}


def readme_table(section: str, first_column: str) -> Table:
    """The one table of README's ``section`` whose first column is ``first_column``."""
    found = [t for t in readme_tables().get(section, []) if t.header[:1] == (first_column,)]
    assert len(found) == 1, f"README's {section!r} has {len(found)} {first_column!r} tables"
    return found[0]


def rows_by_name(table: Table) -> dict[str, Row]:
    """The rows of a table by the one code span of their first cell."""
    assert all(len(row[0].code) == 1 for row in table.rows), "one name in each first cell"
    return {row[0].code[0]: row for row in table.rows}


# --- the source, read statically ----------------------------------------------------


class Unreadable(Exception):
    """The scan cannot tell what this code registers or logs."""


@dataclass
class Module:
    """One module: its syntax tree, the names it imports and its module-level values."""

    name: str
    where: str
    tree: ast.Module
    imports: dict[str, str] = field(default_factory=dict)
    assigned: dict[str, ast.expr] = field(default_factory=dict)

    @classmethod
    def parse(cls, name: str, where: str, text: str, *, package: bool = False) -> Module:
        module = cls(name, where, ast.parse(text))
        home = name if package else name.rpartition(".")[0]
        for node in module.tree.body:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    local = alias.asname or alias.name.split(".")[0]
                    module.imports[local] = alias.name if alias.asname else local
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative to the module's package
                    parts = home.split(".")[: len(home.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                for alias in node.names:
                    module.imports[alias.asname or alias.name] = f"{base}.{alias.name}"
            elif isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if len(targets) == 1 and isinstance(targets[0], ast.Name):
                    module.assigned[targets[0].id] = node.value
        return module

    def qualified(self, func: ast.expr) -> str:
        """The dotted name an expression refers to, as far as the imports tell."""
        if isinstance(func, ast.Name):
            return self.imports.get(func.id, f"{self.name}.{func.id}")
        if isinstance(func, ast.Attribute):
            return f"{self.qualified(func.value)}.{func.attr}"
        return "?"

    def at(self, node: ast.AST) -> str:
        return f"{self.where}:{getattr(node, 'lineno', '?')}"


@dataclass
class Source:
    """The modules scanned, by dotted name."""

    modules: dict[str, Module]

    @classmethod
    def of(cls, texts: dict[str, str]) -> Source:
        """Modules from ``{dotted name: source text}``."""
        return cls({name: Module.parse(name, name, text) for name, text in texts.items()})

    def value(self, node: ast.expr, module: Module, depth: int = 0) -> object:
        """The value of a literal, or of a module constant built from literals."""
        if depth > 20:
            raise Unreadable(f"{module.at(node)}: constants that refer to each other")
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Tuple | ast.List):
            return tuple(self.value(item, module, depth + 1) for item in node.elts)
        if isinstance(node, ast.Dict) and None not in node.keys:
            return {
                self.value(k, module, depth + 1): self.value(v, module, depth + 1)
                for k, v in zip(node.keys, node.values, strict=True)
                if k is not None
            }
        if isinstance(node, ast.Name):
            if node.id in module.assigned:
                return self.value(module.assigned[node.id], module, depth + 1)
            home, _, name = module.imports.get(node.id, "").rpartition(".")
            if home in self.modules and name in self.modules[home].assigned:
                other = self.modules[home]
                return self.value(other.assigned[name], other, depth + 1)
        raise Unreadable(f"{module.at(node)}: cannot tell the value of {ast.unparse(node)}")

    def names(self, node: ast.expr, module: Module) -> list[str]:
        """The strings an argument can be: its value, or every value of a dict it indexes."""
        value = self.value(node.value if isinstance(node, ast.Subscript) else node, module)
        values = list(value.values()) if isinstance(value, dict) else [value]
        if isinstance(node, ast.Subscript) != isinstance(value, dict) or not all(
            isinstance(v, str) for v in values
        ):
            raise Unreadable(f"{module.at(node)}: {ast.unparse(node)} is not a name")
        return [str(v) for v in values]


@cache
def source() -> Source:
    modules = {}
    for package in PACKAGES:
        for path in sorted((SRC / package).rglob("*.py")):
            parts = path.relative_to(SRC).with_suffix("").parts
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            where = str(path.relative_to(ROOT))
            modules[name] = Module.parse(name, where, path.read_text(), package=is_package)
    return Source(modules)


# --- metrics --------------------------------------------------------------------------

READ_KINDS = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram",
              "Summary": "summary"}  # fmt: skip
# What a custom collector yields: the labels are the family's ``labels`` argument.
READ_FAMILIES = {"CounterMetricFamily": "counter", "GaugeMetricFamily": "gauge"}
# RequestMetrics makes its families from the names its callers pass: read there.
COLLECTOR_MODULE, COLLECTOR = "cellwork.observability.requests", "RequestMetrics"


@dataclass(frozen=True, slots=True)
class MetricSite:
    name: str
    kind: str
    labels: tuple[str, ...]
    where: str


def exposed(name: str, kind: str) -> str:
    """The name a scrape shows: prometheus-client writes a counter as ``<name>_total``."""
    return f"{name}_total" if kind == "counter" and not name.endswith("_total") else name


def prometheus_metric_class(qualified: str) -> str | None:
    """The class name when ``qualified`` is one of prometheus-client's metric classes."""
    home, _, name = qualified.rpartition(".")
    if home.split(".")[0] != "prometheus_client":
        return None
    try:
        cls = getattr(importlib.import_module(home), name, None)
    except ImportError:  # an attribute of an object (REGISTRY.register), not of a module
        return None
    is_metric = isinstance(cls, type) and issubclass(cls, MetricWrapperBase | Metric)
    return name if is_metric else None


def _argument(call: ast.Call, position: int, keyword: str) -> ast.expr | None:
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    return call.args[position] if len(call.args) > position else None


def _labels(src: Source, node: ast.expr | None, module: Module) -> tuple[str, ...]:
    value = () if node is None else src.value(node, module)
    if not isinstance(value, tuple) or not all(isinstance(v, str) for v in value):
        raise Unreadable(f"{module.at(node or module.tree)}: labels that are not names")
    return tuple(str(v) for v in value)


def _metric_sites(src: Source, module: Module, call: ast.Call) -> Iterator[MetricSite]:
    qualified = module.qualified(call.func)
    prometheus = prometheus_metric_class(qualified)
    where = module.at(call)
    if prometheus in READ_FAMILIES:
        kind, name = READ_FAMILIES[prometheus], _argument(call, 0, "name")
        if name is None:
            raise Unreadable(f"{where}: {prometheus} without a name")
        labels = _labels(src, _argument(call, 3, "labels"), module)
        for each in src.names(name, module):
            yield MetricSite(exposed(each, kind), kind, labels, where)
    elif prometheus is not None:
        if prometheus not in READ_KINDS:
            raise Unreadable(f"{where}: the scan does not read prometheus-client's {prometheus}")
        if any(kw.arg in ("namespace", "subsystem", "unit") for kw in call.keywords):
            raise Unreadable(f"{where}: a name built from namespace, subsystem or unit")
        kind, name = READ_KINDS[prometheus], _argument(call, 0, "name")
        if name is None:
            raise Unreadable(f"{where}: {prometheus} without a name")
        labels = _labels(src, _argument(call, 2, "labelnames"), module)
        for each in src.names(name, module):
            yield MetricSite(exposed(each, kind), kind, labels, where)
    elif qualified.rpartition(".")[2] == COLLECTOR:
        given = {kw.arg: kw.value for kw in call.keywords}
        if call.args or None in given:
            raise Unreadable(f"{where}: RequestMetrics with arguments the scan cannot match")
        labels = _labels(src, given.get("labels"), module)
        outcome = _labels(src, given.get("outcome_labels"), module)
        parts = [("requests", "counter", labels + outcome), ("duration", "histogram", labels),
                 ("in_flight", "gauge", labels)]  # fmt: skip
        for keyword, kind, its_labels in parts:
            for each in src.names(given[keyword], module) if keyword in given else []:
                if each:  # no in-flight name, no gauge
                    yield MetricSite(exposed(each, kind), kind, its_labels, where)


def registered_metrics(src: Source) -> tuple[dict[str, MetricSite], list[str]]:
    """Every metric the modules register, by the name a scrape shows; what is unreadable."""
    metrics: dict[str, MetricSite] = {}
    problems: list[str] = []
    for module in src.modules.values():
        exempt = {
            id(inner)
            for node in module.tree.body
            if module.name == COLLECTOR_MODULE
            and isinstance(node, ast.ClassDef)
            and node.name == COLLECTOR
            for inner in ast.walk(node)
        }
        for call in ast.walk(module.tree):
            if not isinstance(call, ast.Call) or id(call) in exempt:
                continue
            try:
                for site in _metric_sites(src, module, call):
                    seen = metrics.setdefault(site.name, site)
                    if (seen.kind, seen.labels) != (site.kind, site.labels):
                        problems.append(f"{site.where}: {site.name} unlike at {seen.where}")
            except Unreadable as exc:
                problems.append(str(exc))
    return metrics, problems


def documented_metrics() -> dict[str, Row]:
    return rows_by_name(readme_table("Metrics and log events", "metric"))


def test_every_metric_the_code_registers_is_in_readmes_table_and_no_other():
    metrics, problems = registered_metrics(source())
    assert problems == []
    documented = {name for name in documented_metrics() if not name.endswith("*")}
    assert sorted(set(metrics) - documented) == [], "registered, missing from README"
    assert sorted(documented - set(metrics)) == [], "in README, registered nowhere"


def test_readme_gives_each_metric_the_type_and_labels_it_is_registered_with():
    metrics, _ = registered_metrics(source())
    rows = documented_metrics()
    documented = {
        name: (row[1].text, sorted(row[2].code)) for name, row in rows.items() if name in metrics
    }
    registered = {
        name: (site.kind, sorted(site.labels)) for name, site in metrics.items() if name in rows
    }
    assert documented == registered


def test_readmes_wildcard_metric_rows_are_exactly_prometheus_clients_default_collectors():
    defaults = [
        family.name
        for collector in (
            prometheus_client.PROCESS_COLLECTOR,
            prometheus_client.PLATFORM_COLLECTOR,
            prometheus_client.GC_COLLECTOR,
        )
        for family in collector.collect()
    ]
    prefixes = [name[:-1] for name in documented_metrics() if name.endswith("*")]
    assert [p for p in prefixes if not any(d.startswith(p) for d in defaults)] == []
    assert [d for d in defaults if not any(d.startswith(p) for p in prefixes)] == []


def test_scan_follows_metric_names_through_constants_imports_and_dict_lookups():
    src = Source.of(
        {
            "pkg.names": 'SERVER = "x_server_total"\nCLIENT = "x_client_total"\n',
            "pkg.m": (
                "import collections\n"
                "import prometheus_client as prom\n"
                "from prometheus_client import Counter\n"
                "from cellwork.observability.requests import RequestMetrics\n"
                "from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily\n"
                "from pkg.names import SERVER, CLIENT\n"
                "_BY_SIDE = {'server': SERVER, 'client': CLIENT}\n"
                "def make(side):\n"
                "    Counter(_BY_SIDE[side], 'h', ['a'])\n"
                "    prom.Gauge('x_open', 'h')\n"
                "    collections.Counter('not_a_metric')\n"
                "    RequestMetrics(requests='y_total', duration='y_seconds', in_flight='',\n"
                "                   labels=('r',), outcome_labels=('s',), buckets=(1.0,),\n"
                "                   requests_help='', duration_help='')\n"
                "    CounterMetricFamily('z_calls_total', 'h', labels=['e'])\n"
                "    GaugeMetricFamily('z_open', 'h', None, ['s', 't'])\n"
            ),
        }
    )
    metrics, problems = registered_metrics(src)
    assert problems == []
    assert {name: (m.kind, m.labels) for name, m in metrics.items()} == {
        "x_server_total": ("counter", ("a",)),
        "x_client_total": ("counter", ("a",)),
        "x_open": ("gauge", ()),
        "y_total": ("counter", ("r", "s")),
        "y_seconds": ("histogram", ("r",)),
        "z_calls_total": ("counter", ("e",)),
        "z_open": ("gauge", ("s", "t")),
    }


def test_scan_reports_a_metric_it_cannot_read_instead_of_skipping_it():
    src = Source.of(
        {
            "pkg.m": (
                "from prometheus_client import Counter, Info\n"
                "def make(side, labels):\n"
                "    Counter(f'x_{side}_total', 'h')\n"
                "    Info('build', 'h')\n"
                "    Counter('x_total', 'h', labels)\n"
            )
        }
    )
    metrics, problems = registered_metrics(src)
    assert metrics == {}
    assert [problem.split(":")[1] for problem in problems] == ["3", "4", "5"]


# --- log events ----------------------------------------------------------------------

LEVELS = {"debug": "debug", "info": "info", "msg": "info", "warning": "warning",
          "warn": "warning", "error": "error", "exception": "error", "critical": "critical",
          "fatal": "critical"}  # fmt: skip
# get_logger's own module makes a logger for every caller: not a logger of its own.
FACTORY_MODULE = "cellwork.observability.logging"
EVENT_NAME = re.compile(r"[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*")


@dataclass(frozen=True, slots=True)
class EventSite:
    event: str
    level: str
    component: str
    where: str


def _is_logger_factory(module: Module, node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and module.qualified(node.func).endswith(".get_logger")


def _loggers(module: Module) -> tuple[dict[str, str], list[str]]:
    """The module's ``_log = get_logger("component")``, by name; loggers made otherwise."""
    loggers = {
        name: value.args[0].value
        for name, value in module.assigned.items()
        if _is_logger_factory(module, value)
        and isinstance(value, ast.Call)
        and len(value.args) == 1
        and isinstance(value.args[0], ast.Constant)
        and isinstance(value.args[0].value, str)
    }
    followed = {id(module.assigned[name]) for name in loggers}
    problems = [
        f"{module.at(node)}: a logger made where the scan cannot follow it"
        for node in ast.walk(module.tree)
        if _is_logger_factory(module, node)
        and id(node) not in followed
        and module.name != FACTORY_MODULE
    ]
    return loggers, problems


def _event_at(call: ast.Call, index: int, module: Module) -> str:
    node = call.args[index] if index < len(call.args) else None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    raise Unreadable(f"{module.at(call)}: an event that is not a literal")


def _site(module: Module, node: ast.Name, parents: dict[int, ast.AST], component: str) -> EventSite:
    method = parents.get(id(node))
    call = parents.get(id(method))
    if isinstance(method, ast.Attribute) and method.attr in LEVELS and isinstance(call, ast.Call):
        if call.func is method:
            event = _event_at(call, 0, module)
        elif method in call.args:  # the method passed as a callback, the event after it
            event = _event_at(call, call.args.index(method) + 1, module)
        else:
            raise Unreadable(f"{module.at(node)}: a use of {node.id} the scan cannot read")
        return EventSite(event, LEVELS[method.attr], component, module.at(call))
    raise Unreadable(f"{module.at(node)}: a use of {node.id} the scan cannot read")


def logged_events(src: Source) -> tuple[list[EventSite], list[str]]:
    """Every log event the modules emit, where; and the uses of loggers it cannot read."""
    sites: list[EventSite] = []
    problems: list[str] = []
    for module in src.modules.values():
        loggers, misuses = _loggers(module)
        problems += misuses
        parents = {
            id(child): parent
            for parent in ast.walk(module.tree)
            for child in ast.iter_child_nodes(parent)
        }
        for node in ast.walk(module.tree):
            if isinstance(node, ast.Name) and node.id in loggers:
                if isinstance(node.ctx, ast.Store):
                    continue
                try:
                    sites.append(_site(module, node, parents, loggers[node.id]))
                except Unreadable as exc:
                    problems.append(str(exc))
    return sites, problems


def documented_events() -> dict[str, Row]:
    return rows_by_name(readme_table("Metrics and log events", "event"))


def test_every_log_event_in_src_is_in_readmes_table_and_no_other():
    sites, problems = logged_events(source())
    assert problems == []
    emitted, documented = {site.event for site in sites}, set(documented_events())
    assert sorted(emitted - documented) == [], "logged, missing from README"
    assert sorted(documented - emitted) == [], "in README, logged nowhere"


def test_every_log_event_is_a_dotted_lowercase_name():
    sites, _ = logged_events(source())
    assert [f"{s.where}: {s.event}" for s in sites if not EVENT_NAME.fullmatch(s.event)] == []


def test_readme_gives_each_log_event_the_levels_and_components_that_emit_it():
    sites, _ = logged_events(source())
    rows = documented_events()
    emitted: dict[str, tuple[set[str], set[str]]] = {}
    for site in sites:
        levels, components = emitted.setdefault(site.event, (set(), set()))
        levels.add(site.level)
        components.add(site.component)
    documented = {
        event: ({w.strip() for w in rows[event][1].text.split(",")}, set(rows[event][2].code))
        for event in emitted
        if event in rows
    }
    assert documented == {event: emitted[event] for event in documented}


def test_scan_reads_an_event_logged_through_a_callback_and_reports_other_uses():
    src = Source.of(
        {
            "pkg.m": (
                "from cellwork.observability.logging import get_logger\n"
                "_log = get_logger('pkg.part')\n"
                "def run(stack, name):\n"
                "    _log.exception('part.failed')\n"
                "    stack.callback(_log.info, 'part.stopped', cell=name)\n"
                "    _log.bind(x=1).info('part.hidden')\n"
                "    _log.info(name)\n"
                "    get_logger('pkg.elsewhere').info('part.unseen')\n"
            )
        }
    )
    sites, problems = logged_events(src)
    assert [(s.event, s.level, s.component) for s in sites] == [
        ("part.failed", "error", "pkg.part"),
        ("part.stopped", "info", "pkg.part"),
    ]
    assert sorted(problem.split(":")[1] for problem in problems) == ["6", "7", "8"]


# --- the architecture table ----------------------------------------------------------

PATH_LIKE = re.compile(r"[^\s]*(/|\.(py|yaml|yml|json|proto|md|toml|conf))")


def architecture_rows() -> tuple[Row, ...]:
    return readme_table("Architecture", "folder").rows


def listed_folders(parent: str) -> set[str]:
    pattern = re.compile(rf"{re.escape(parent)}([^/]+)/")
    return {
        match.group(1)
        for row in architecture_rows()
        for path in row[0].code
        if (match := pattern.fullmatch(path))
    }


def test_architecture_table_lists_exactly_the_platform_parts():
    # Generated stubs (testing/v1) sit inside a part: only the top-level folders count.
    parts = {path.parent.name for path in (SRC / "cellwork").glob("*/__init__.py")}
    assert listed_folders("src/cellwork/") == parts


def test_architecture_table_lists_exactly_learnfeeds_services():
    # A service is what `cellwork serve learnfeed.NAME` runs: a package with a service module.
    services = {path.parent.name for path in (SRC / "learnfeed").glob("*/service.py")}
    assert listed_folders("src/learnfeed/") == services


def test_every_path_the_architecture_table_names_exists():
    missing = [path for row in architecture_rows() for path in row[0].code
               if not (ROOT / path).exists()]  # fmt: skip
    for row in architecture_rows():
        # A path in the description is relative to the row's folder, or to the root.
        homes = [ROOT / path for path in row[0].code if path.endswith("/")] + [ROOT]
        missing += [
            f"{path} (row {row[0].text})"
            for cell in row[1:]
            for path in cell.code
            if PATH_LIKE.fullmatch(path) and not any((home / path).exists() for home in homes)
        ]
    assert missing == []


# --- the configuration tables ---------------------------------------------------------


def variables(settings: type[BaseSettings], beyond: type[BaseSettings] | None) -> set[str]:
    """The environment variable of each field of ``settings`` that ``beyond`` lacks."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    inherited = set(beyond.model_fields) if beyond else set()
    return {
        alias if isinstance(alias := info.validation_alias, str) else f"{prefix}{name}".upper()
        for name, info in settings.model_fields.items()
        if name not in inherited
    }


def documented_variables(index: int) -> set[str]:
    tables = readme_tables()["Configuration"]
    assert [t.header[0] for t in tables[:2]] == ["variable", "variable"]
    return {
        code
        for row in tables[index].rows
        for code in row[0].code
        if re.fullmatch(r"CELLWORK_[A-Z0-9_]+", code)
    }


def test_instance_settings_table_lists_every_service_setting_and_no_other():
    assert documented_variables(0) == variables(ServiceSettings, None)


def test_learnfeed_settings_table_lists_every_learnfeed_setting_and_no_other():
    assert documented_variables(1) == variables(LearnfeedSettings, ServiceSettings)
