"""CSV of result rows whose per-reason counts become columns of their own
(`iovtui compare --format csv`, `iovtui sweep --format csv`)."""

from __future__ import annotations

import csv
import io
from typing import Any, Sequence

__all__ = ["spread_csv"]


def spread_csv(rows: Sequence[dict[str, Any]], columns: Sequence[str],
               spread: Sequence[tuple[str, str, str]]) -> str:
    """``rows`` as CSV text: ``columns`` as they are (None as an empty cell),
    then for each ``(field, prefix, suffix)`` of ``spread`` one column
    ``prefix + key + suffix`` per key any row's dict ``field`` has (sorted;
    0 in a row that has none)."""
    keys = [(f, p, s, sorted({k for r in rows for k in r[f]})) for f, p, s in spread]
    cols = [*columns, *(f"{p}{k}{s}" for _f, p, s, ks in keys for k in ks)]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
    w.writeheader()
    for r in rows:
        flat = {k: ("" if r[k] is None else r[k]) for k in columns}
        for f, p, s, ks in keys:
            d = r[f]
            flat.update({f"{p}{k}{s}": d.get(k, 0) for k in ks})
        w.writerow(flat)
    return buf.getvalue()
