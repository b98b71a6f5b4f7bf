"""A fast exposition writer for the large per-host families, prometheus_client for the rest.

A 10,000-host scrape is about 90,000 samples. Rendered through prometheus_client, each
one becomes a ``Sample`` with a label dict, and each line then validates and escapes
every label name, sorts the labels and formats the value: about half of a
2-second scrape went there. The per-host families instead carry their rows as plain
tuples (:class:`RowFamily`) and write their own lines here, with the label names
checked and sorted once per family and only the label values escaped per line. Every
other family (build info, mirrors, jobs, process and multiprocess metrics) is still
rendered by prometheus_client's own encoder, so its output is exactly as before.

The text written here must stay byte-identical to what prometheus_client writes for the
same family, in both formats it negotiates: the Prometheus text format (0.0.4, and
1.0.0 with ``underscores`` or ``allow-utf-8`` name escaping, which are the same for
the legacy-valid names patchwatch uses) and OpenMetrics. For the escaping schemes that
rewrite valid names (``dots``, ``values``) and for ``name[]`` filtering the caller
falls back to prometheus_client for the whole scrape. tests/test_exporter.py compares
both writers sample by sample, awkward label values included.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Iterator
from collections.abc import Sequence

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text"
# Name escaping schemes under which prometheus_client writes legacy-valid metric and
# label names unchanged; the fast writer only produces those.
PLAIN_NAME_ESCAPINGS = frozenset({openmetrics.UNDERSCORES, openmetrics.ALLOWUTF8})
EOF_LINE = b"# EOF\n"
# Names every format and escaping scheme writes unchanged (no ``:``, which the
# OpenMetrics writer turns into ``_`` in sample lines under ``underscores``).
PLAIN_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")

Row = tuple[Sequence[str], float]

_INT_TEXT: dict[int, str] = {}
_INT_TEXT_MAX = 4096


def escape_label_value(value: str) -> str:
    """Escape a label value as both text formats require: backslash, newline, quote.

    The check first: nearly every value (host names, kernels) needs nothing, and three
    substring tests cost less than three ``replace`` calls that copy the string.
    """
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def escape_help(documentation: str, openmetrics_format: bool) -> str:
    """Escape a HELP text: the text format escapes backslash and newline, OpenMetrics
    also the double quote (as prometheus_client does for each)."""
    text = documentation.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if openmetrics_format else text


def format_value(value: float) -> str:
    """Format a sample value exactly as prometheus_client's ``floatToGoString`` does.

    Most values are small integers (counts, 0/1 flags): their text is remembered, the
    rest goes through ``floatToGoString`` itself so that the two can never differ.
    ``bool`` is excluded from the cache on purpose (``type(True) is not int``); it
    formats the same anyway.
    """
    if type(value) is int:
        text = _INT_TEXT.get(value)
        if text is None:
            text = floatToGoString(value)
            if len(_INT_TEXT) < _INT_TEXT_MAX:
                _INT_TEXT[value] = text
        return text
    return floatToGoString(value)


class RowFamily(Metric):
    """A gauge family whose samples are kept as ``(label values, value)`` rows.

    It is a real prometheus_client ``Metric``: anything that reads ``samples``
    (``get_sample_value``, ``restricted_registry``, prometheus_client's encoders) gets
    ordinary ``Sample`` objects, built on first use. The exporter's fast path never
    builds them; it calls :meth:`render` instead, which writes the same lines.
    """

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], rows: list[Row]
    ) -> None:
        for plain in (name, *labelnames):
            if not PLAIN_NAME.fullmatch(plain):
                raise ValueError(f"{plain!r} would need escaping; RowFamily writes plain names")
        self.labelnames = tuple(labelnames)
        self.rows = rows
        self._samples: list[Sample] | None = None
        super().__init__(name, documentation, "gauge")  # assigns samples = [] (ignored)

    @property
    def samples(self) -> list[Sample]:
        """The rows as prometheus_client samples, built once when first asked for."""
        if self._samples is None:
            name, labelnames = self.name, self.labelnames
            self._samples = [
                Sample(name, dict(zip(labelnames, values, strict=True)), value)
                for values, value in self.rows
            ]
        return self._samples

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        """``Metric.__init__`` assigns an empty list: keep the rows then; an explicit
        non-empty assignment replaces them, as it would on a plain ``Metric``."""
        if value:
            self.rows = []
            self._samples = list(value)

    def render(self, openmetrics_format: bool) -> str:
        """The family's HELP, TYPE and sample lines, as prometheus_client writes them.

        Labels are written sorted by name (prometheus_client sorts each sample's
        labels); the order is worked out once, not per line.
        """
        name = self.name
        out = [
            f"# HELP {name} {escape_help(self.documentation, openmetrics_format)}\n",
            f"# TYPE {name} gauge\n",
        ]
        order = sorted(range(len(self.labelnames)), key=self.labelnames.__getitem__)
        esc, fmt = escape_label_value, format_value
        if not order:
            out += [f"{name} {fmt(value)}\n" for _values, value in self.rows]
        elif len(order) == 1:
            prefix = f'{name}{{{self.labelnames[0]}="'
            out += [f'{prefix}{esc(values[0])}"}} {fmt(value)}\n' for values, value in self.rows]
        elif len(order) == 2:
            i, j = order
            prefix = f'{name}{{{self.labelnames[i]}="'
            middle = f'",{self.labelnames[j]}="'
            out += [
                f'{prefix}{esc(values[i])}{middle}{esc(values[j])}"}} {fmt(value)}\n'
                for values, value in self.rows
            ]
        else:
            keys = [(i, f'{self.labelnames[i]}="') for i in order]
            out += [
                name
                + "{"
                + ",".join([f'{key}{esc(values[i])}"' for i, key in keys])
                + "} "
                + fmt(value)
                + "\n"
                for values, value in self.rows
            ]
        return "".join(out)


class Families:
    """A collector that serves families already collected, for prometheus_client's
    encoders (they take a registry; only ``collect`` is used)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)


Encoder = Callable[[Collector], bytes]


def negotiate(accept_header: str | None) -> tuple[Encoder, str, bool | None]:
    """Choose the format as prometheus_client would for this ``Accept`` header.

    Returns prometheus_client's encoder, the content type to send, and whether the
    fast writer may produce it: ``True`` for OpenMetrics, ``False`` for the text
    format, ``None`` when the negotiated name escaping would rewrite patchwatch's
    names (only prometheus_client's writer knows how).
    """
    encoder, content_type = choose_encoder(accept_header or "")
    escaping = openmetrics.UNDERSCORES
    for token in content_type.split(";"):
        key, _, value = token.strip().partition("=")
        if key == "escaping":
            escaping = value
    if escaping not in PLAIN_NAME_ESCAPINGS:
        return encoder, content_type, None
    return encoder, content_type, content_type.startswith(OPENMETRICS_CONTENT_TYPE)


def render(families: Iterable[Metric], encoder: Encoder, openmetrics_format: bool) -> bytes:
    """Write ``families`` in order: :class:`RowFamily` by hand, runs of other families
    through prometheus_client's ``encoder``; OpenMetrics's ``# EOF`` once at the end.

    The result is the bytes ``encoder`` alone would write for the same families.
    """
    parts: list[bytes] = []
    pending: list[Metric] = []

    def flush() -> None:
        if pending:
            text = encoder(Families(pending))
            if openmetrics_format and text.endswith(EOF_LINE):
                text = text[: -len(EOF_LINE)]
            parts.append(text)
            pending.clear()

    for family in families:
        if isinstance(family, RowFamily):
            flush()
            parts.append(family.render(openmetrics_format).encode("utf-8"))
        else:
            pending.append(family)
    flush()
    if openmetrics_format:
        parts.append(EOF_LINE)
    return b"".join(parts)
