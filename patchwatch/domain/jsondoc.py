"""Decode a JSON request body within bounds that are checked before it is parsed.

Parsing JSON into Python objects costs far more than the text: about 70 bytes per
value (an empty object, a one-character string, a number) whatever its size in the
text, so a few megabytes of gzip holding a million tiny package objects took hundreds
of megabytes before the package limit could refuse it. :func:`count_values` counts the
values of a document from three byte counts done in C, and :func:`decode_json`
refuses a body above the bound before the parser (orjson, or ``json.loads`` for what
orjson refuses) builds anything. The count is an upper bound for every document (each
value but the first follows a comma or opens a container; commas and brackets inside
strings only count more), so a refused body is never one that would have fitted.

Nesting is bounded too: a document nested deeper than the parser's recursion limit
(about 1,000 levels) is a 400 naming the body, not a 500. Reports themselves are at
most five levels deep, so the report parsers refuse anything deeper that does fit.

Pure: no I/O, no web framework; the receiver maps the errors to 413 and 400.
"""

from __future__ import annotations

import json

import orjson

from patchwatch.domain.errors import ParseError
from patchwatch.domain.errors import TooLargeError

# bytes a parsed value costs in CPython (json.loads, 3.11, measured with tracemalloc:
# 64-73 for empty objects and arrays, short strings and numbers); strings add their
# length, which the body's own length bounds
VALUE_COST_BYTES = 72


def count_values(body: bytes) -> int:
    """An upper bound of the number of JSON values in ``body``, counted without parsing."""
    return body.count(b",") + body.count(b"[") + body.count(b"{") + 1


def parse_cost(body: bytes, values: int | None = None) -> int:
    """About the bytes ``json.loads(body)`` takes, body included (an over-estimate)."""
    if values is None:
        values = count_values(body)
    return 2 * len(body) + VALUE_COST_BYTES * values


def decode_json(body: bytes, max_values: int, values: int | None = None) -> object:
    """Return the document in ``body`` (UTF-8 JSON), refusing it before parsing when large.

    ``values``: the count of :func:`count_values` when the caller already has it.

    :raises TooLargeError: when the body holds more than ``max_values`` values.
    :raises ParseError: for a body that is not UTF-8 JSON, or is nested too deeply.
    """
    if values is None:
        values = count_values(body)
    if values > max_values:
        raise TooLargeError(
            f"report holds more than {max_values} JSON values (setting max_report_values)"
        )
    try:
        # half the time of json.loads; what it refuses (a lone surrogate escape, NaN, an
        # integer past 64 bits, UTF-16, nesting past its limit) json.loads decides below,
        # so what is accepted and refused, and why, is json.loads's
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise ParseError("body is not UTF-8", "body") from None
    except RecursionError:
        raise ParseError("body is nested too deeply", "body") from None
    except ValueError as exc:
        raise ParseError(f"body is not valid JSON: {exc}", "body") from None
