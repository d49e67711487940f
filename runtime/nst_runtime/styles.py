"""Choosing a style of a multi-style network: a name, an index or a blend -> the weight vector the graph takes.

A multi-style network (Dumoulin et al. 2017's conditional instance normalization, or an imported graph with a
style-weights input) holds N styles; its sidecar's :class:`~nst_runtime.sidecar.StyleInput` names them. Every
call feeds a float32 vector of N weights; one style is a one-hot vector, a blend a convex combination::

    stylizer.stylize(photo, style="mosaic")          # by name
    stylizer.stylize(photo, style=3)                 # by index (0-based)
    stylizer.stylize(photo, style="3:0.5,12:0.5")    # a blend (indices or names, weights)
    stylizer.stylize(photo, style={"mosaic": 0.7, "udnie": 0.3})
    stylizer.stylize(photo, style=np.array([...]))   # the N weights themselves

Weights must be finite and >= 0 with a positive sum; they are scaled to sum to 1 (a blend of styles, not an
extrapolation past them), so ``"a:1,b:1"`` is the same as ``"a:0.5,b:0.5"``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from .errors import UsageError
from .sidecar import StyleInput

#: what ``style=`` accepts: a name or ``"I:W,J:W"`` text, an index, {name or index: weight}, or N weights
StyleSpec = str | int | Mapping[str | int, float] | Sequence[float] | np.ndarray

#: names listed in an error at most (a 26-style network lists all of them)
_LISTED = 40


def style_names_text(style: StyleInput) -> str:
    """``0 candy, 1 mosaic, ...``: the styles with their indices, for messages and ``nst-info``."""
    if style.names == tuple(str(i) for i in range(style.size)):
        return f"styles 0..{style.size - 1} (unnamed)"
    shown = [f"{i} {n}" for i, n in enumerate(style.names[:_LISTED])]
    more = f", ... ({style.size - _LISTED} more)" if style.size > _LISTED else ""
    return ", ".join(shown) + more


def missing_style_message(style: StyleInput, what: str) -> str:
    return (f"{what} holds {style.size} styles; choose one with --style NAME|INDEX or a blend "
            f"\"I:W,J:W\" (Python: style=...): {style_names_text(style)}.")


def _index_of(key: str | int, style: StyleInput, what: str) -> int:
    if isinstance(key, bool):
        raise UsageError(f"style {key!r}: expected a name or an index, not a boolean.")
    if isinstance(key, (int, np.integer)):
        index = int(key)
    else:
        text = str(key).strip()
        if text in style.names:
            return style.names.index(text)
        folded = [n.casefold() for n in style.names]
        if text.casefold() in folded and folded.count(text.casefold()) == 1:
            return folded.index(text.casefold())
        try:
            index = int(text)
        except ValueError:
            raise UsageError(f"style {text!r}: {what} has no style of that name; it has "
                             f"{style_names_text(style)}.") from None
    if not 0 <= index < style.size:
        raise UsageError(f"style index {index}: {what} has styles 0..{style.size - 1} "
                         f"({style_names_text(style)}).")
    return index


def _parse_blend(text: str, style: StyleInput, what: str) -> dict[int, float]:
    """``"3:0.5,12:0.5"`` / ``"mosaic:0.7,udnie:0.3"`` / ``"mosaic,udnie"`` (equal weights)."""
    weights: dict[int, float] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise UsageError(f"style {text!r}: an empty item; expected I:W,J:W (e.g. 3:0.5,12:0.5).")
        key, sep, value = item.rpartition(":") if ":" in item else (item, "", "1")
        if sep and not key.strip():
            raise UsageError(f"style {text!r}: {item!r} has a weight but no style; expected NAME:W or INDEX:W.")
        try:
            weight = float(value)
        except ValueError:
            raise UsageError(f"style {text!r}: the weight {value!r} of {key!r} is not a number; expected "
                             "I:W,J:W (e.g. 3:0.5,12:0.5).") from None
        index = _index_of(key, style, what)
        weights[index] = weights.get(index, 0.0) + weight
    return weights


def style_weights(spec: StyleSpec, style: StyleInput, *, what: str = "the model") -> np.ndarray:
    """The float32 weight vector (length ``style.size``, summing to 1) that ``spec`` chooses.

    Raises :class:`UsageError` naming the styles for an unknown name, an index out of range, negative or
    non-finite weights, or weights summing to zero.
    """
    vector = np.zeros(style.size, np.float64)
    if isinstance(spec, str) and ("," in spec or ":" in spec) and spec.strip() not in style.names:
        for index, weight in _parse_blend(spec, style, what).items():
            vector[index] = weight
    elif isinstance(spec, (str, int, np.integer)) and not isinstance(spec, bool):
        vector[_index_of(spec, style, what)] = 1.0
    elif isinstance(spec, Mapping):
        for key, weight in spec.items():
            vector[_index_of(key, style, what)] += float(weight)
    elif isinstance(spec, (Sequence, np.ndarray)) and not isinstance(spec, (str, bytes)):
        values = np.asarray(spec, dtype=np.float64).reshape(-1)
        if values.size != style.size:
            raise UsageError(f"style weights: {values.size} values for {what}, which holds {style.size} styles "
                             f"({style_names_text(style)}).")
        vector = values
    else:
        raise UsageError(f"style {spec!r}: expected a name, an index, \"I:W,J:W\", a {{style: weight}} mapping or "
                         f"{style.size} weights.")
    if not np.all(np.isfinite(vector)) or np.any(vector < 0):
        raise UsageError(f"style {spec!r}: weights must be finite and >= 0 (a blend of the styles), got "
                         f"{[round(float(v), 4) for v in vector if v != 0 or not math.isfinite(v)]}.")
    total = float(vector.sum())
    if total <= 0:
        raise UsageError(f"style {spec!r}: the weights sum to 0; give at least one style a positive weight.")
    return (vector / total).astype(np.float32)


def describe_weights(weights: np.ndarray, style: StyleInput) -> str:
    """``mosaic`` or ``0.7 mosaic + 0.3 udnie``: a weight vector in words (for logs and labels)."""
    used = [(float(w), style.names[i]) for i, w in enumerate(weights) if w > 0]
    if len(used) == 1:
        return used[0][1]
    return " + ".join(f"{w:.3g} {name}" for w, name in sorted(used, reverse=True))
