"""Just enough PromQL to name what a query uses, and Grafana's substitution of dashboard
variables, the way Grafana does it before a query reaches Prometheus."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

_TOKEN = re.compile(r"""
    (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<number>\d+(?:\.\d+)?(?:e[+-]?\d+)?)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=(){},@])
  | (?P<space>\s+)
""", re.VERBOSE)

AGGREGATIONS = {"sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
                "bottomk", "topk", "quantile", "limitk", "limit_ratio"}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}
MATCH_OPS = {"=", "!=", "=~", "!~"}


@dataclass
class Names:
    metrics: set[str] = field(default_factory=set)
    labels: set[str] = field(default_factory=set)
    # (label, operator, value) of every matcher inside braces
    matchers: list[tuple[str, str, str]] = field(default_factory=list)


def tokens(expr: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(expr):
        match = _TOKEN.match(expr, pos)
        if match is None:
            raise ValueError(f"cannot read PromQL at {expr[pos:pos + 30]!r} in {expr!r}")
        kind = match.lastgroup
        if kind != "space":
            out.append((kind, match.group()))
        pos = match.end()
    return out


def names(expr: str) -> Names:
    """The metric names, label names and label matchers an expression uses."""
    found = Names()
    toks = tokens(expr)
    depth_braces = 0
    grouping_depth = 0  # > 0 inside the parentheses after by/without/on/…
    paren_stack: list[bool] = []  # True for a grouping clause's parentheses
    for i, (kind, text) in enumerate(toks):
        following = toks[i + 1][1] if i + 1 < len(toks) else ""
        if kind == "op" and text == "{":
            depth_braces += 1
        elif kind == "op" and text == "}":
            depth_braces -= 1
        elif kind == "op" and text == "(":
            is_grouping = i > 0 and toks[i - 1][1] in GROUPING
            paren_stack.append(is_grouping)
            grouping_depth += is_grouping
        elif kind == "op" and text == ")":
            grouping_depth -= paren_stack.pop() if paren_stack else 0
        elif kind == "ident":
            if depth_braces:
                if following in MATCH_OPS:
                    label = text
                    found.labels.add(label)
                    value = toks[i + 2][1] if i + 2 < len(toks) else ""
                    found.matchers.append((label, following, _unquote(value)))
                continue
            if grouping_depth:
                found.labels.add(text)
            elif text in GROUPING or text in AGGREGATIONS or text in KEYWORDS:
                continue
            elif following == "(":
                continue  # a function
            else:
                found.metrics.add(text)
    return found


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] in "\"'`" else value


# --- Grafana ---------------------------------------------------------------------------------

_DURATION = re.compile(r"^(\d+)(ms|s|m|h|d)$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
# Grafana's "nice" intervals (public/app/core/utils/kbn: roundInterval), seconds.
_ROUND = [(0.015, 0.01), (0.035, 0.02), (0.075, 0.05), (0.15, 0.1), (0.35, 0.2), (0.75, 0.5),
          (1.5, 1), (3.5, 2), (7.5, 5), (12.5, 10), (17.5, 15), (25, 20), (45, 30), (90, 60),
          (450, 300), (750, 600), (1050, 900), (1500, 1200), (2700, 1800), (5400, 3600),
          (9000, 7200), (16200, 10800), (32400, 21600), (86400, 43200)]


def seconds(duration: str) -> float:
    match = _DURATION.match(duration)
    if not match:
        raise ValueError(f"not a duration: {duration!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def round_interval(raw: float) -> float:
    for limit, nice in _ROUND:
        if raw < limit:
            return nice
    return 86400 * 7 if raw >= 604800 else 86400


def intervals(range_seconds: float, max_data_points: int, scrape_interval: float) -> tuple[float, float]:
    """($__interval, $__rate_interval) in seconds, as Grafana computes them for a Prometheus
    panel: the range over the data points, rounded to a nice value, no finer than the
    datasource's scrape interval; the rate interval max($__interval + scrape, 4 × scrape)."""
    interval = max(round_interval(range_seconds / max_data_points), scrape_interval)
    return interval, max(interval + scrape_interval, 4 * scrape_interval)


def format_seconds(value: float) -> str:
    if value >= 1 and math.isclose(value, round(value)):
        return f"{int(round(value))}s"
    return f"{int(round(value * 1000))}ms"


def substitute(expr: str, variables: dict[str, str]) -> str:
    """Replace $name and ${name} (longest names first, as Grafana matches whole names)."""
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise KeyError(f"no value for ${name} in {expr!r}")
        return variables[name]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", replace, expr)
