"""Query parameters of ``POST /v1/stylize/{model}``, and how nst errors become HTTP answers.

The image options are not listed here: they are read from :meth:`nst_runtime.Stylizer.stylize`'s own keyword
arguments, so whatever the runtime offers for one image (scale, colour preservation, strength…) is a query
parameter under the same name (``preserve_color`` or ``preserve-color``) with no change to this package.
"""

from __future__ import annotations

import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nst_runtime.errors import ImageError, ImageTooLargeError, NstError, UsageError

#: output formats a browser shows: query value -> Pillow format
OUTPUT_FORMATS: dict[str, str] = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}
MEDIA_TYPES: dict[str, str] = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}
_OWN = ("format", "quality")
_TRUE, _FALSE = {"1", "true", "yes", "on", ""}, {"0", "false", "no", "off"}


@dataclass(frozen=True)
class StylizeParams:
    """One request's options. ``options`` are keyword arguments of ``Stylizer.stylize``, sorted (hashable:
    requests with equal options share a batch)."""

    format: str = "PNG"
    quality: int = 95
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.format]


def stylize_options(stylize: Callable[..., Any] | None = None) -> dict[str, Callable[[str], Any]]:
    """The options of ``Stylizer.stylize`` (or ``stylize``), each with a parser for its type: its keyword-only
    parameters and the fields of the ``TypedDict`` its ``**kwargs`` are annotated with (``Unpack[...]``)."""
    if stylize is None:
        from nst_runtime import Stylizer

        stylize = Stylizer.stylize
    try:
        hints = typing.get_type_hints(stylize)
    except Exception:  # an annotation this Python cannot resolve: fall back to the defaults' types
        hints = {}
    parsers: dict[str, Callable[[str], Any]] = {}
    for name, param in inspect.signature(stylize).parameters.items():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            fields = _typed_dict_fields(stylize, param.annotation)
            parsers.update({field: _parser_for(field, annotation) for field, annotation in fields.items()})
        elif param.kind is inspect.Parameter.KEYWORD_ONLY:
            default = type(param.default) if param.default is not inspect.Parameter.empty else str
            parsers[name] = _parser_for(name, hints.get(name, default))
    return parsers


def _typed_dict_fields(function: Callable[..., Any], annotation: Any) -> dict[str, Any]:
    """``**kwargs: Unpack[SomeTypedDict]`` → the TypedDict's fields and types (also when the annotation is
    still a string, as under ``from __future__ import annotations`` with ``Unpack`` imported for type checkers
    only)."""
    typed: Any = None
    if isinstance(annotation, str):
        match = re.fullmatch(r"\s*(?:\w+\.)*Unpack\[\s*(\w+)\s*\]\s*", annotation)
        if match:
            typed = getattr(function, "__globals__", {}).get(match.group(1))
    elif typing.get_args(annotation):
        typed = typing.get_args(annotation)[0]
    if not (isinstance(typed, type) and issubclass(typed, dict) and hasattr(typed, "__annotations__")):
        return {}
    try:
        return typing.get_type_hints(typed)
    except Exception:
        return {name: str for name in typed.__annotations__}


def _parser_for(name: str, annotation: Any) -> Callable[[str], Any]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(inner) == 1:
            return _parser_for(name, inner[0])
    if origin is typing.Literal:
        choices = {str(c).lower(): c for c in typing.get_args(annotation)}

        def literal(text: str) -> Any:
            if text.lower() not in choices:
                raise UsageError(f"{name}={text!r}: expected one of {', '.join(map(str, choices))}.")
            return choices[text.lower()]

        return literal
    if annotation is bool:
        def boolean(text: str) -> bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise UsageError(f"{name}={text!r}: expected true or false.")

        return boolean
    if annotation in (int, float):
        kind = annotation

        def number(text: str) -> Any:
            try:
                return kind(text)
            except ValueError:
                raise UsageError(f"{name}={text!r}: expected {'an integer' if kind is int else 'a number'}.") from None

        return number
    return str


def parse_query(query: Mapping[str, str], options: Mapping[str, Callable[[str], Any]]) -> StylizeParams:
    """Validate ``?format=&quality=`` and the Stylizer's options; :class:`UsageError` names the bad one."""
    fmt_text = query.get("format", "png").lower()
    if fmt_text not in OUTPUT_FORMATS:
        raise UsageError(f"format={fmt_text!r}: expected png, jpeg or webp.")
    quality_text = query.get("quality", "95")
    try:
        quality = int(quality_text)
    except ValueError:
        quality = -1
    if not 0 <= quality <= 100:
        raise UsageError(f"quality={quality_text!r}: expected an integer from 0 to 100 (JPEG and WebP).")
    chosen: dict[str, Any] = {}
    for key, value in query.items():
        if key in _OWN:
            continue
        name = key.replace("-", "_")
        if name not in options:
            known = ", ".join([*_OWN, *sorted(options)])
            raise UsageError(f"unknown query parameter {key!r}; this server takes: {known}.")
        chosen[name] = options[name](value)
    return StylizeParams(OUTPUT_FORMATS[fmt_text], quality, tuple(sorted(chosen.items())))


def refuse_style_paths(options: Mapping[str, Any], *, adain: bool) -> None:
    """An AdaIN model reads a text ``style`` as a file path: on a server that would read any local file a client
    names. Such models take their style image as an upload (:func:`split_upload`), never as text; multi-style
    models keep ``style=`` names, indices and weights."""
    style = options.get("style")
    if adain and style is not None and not isinstance(style, (bytes, bytearray)):
        raise UsageError("style=: this model takes any style image, sent with the request, not named: POST "
                         "multipart/form-data with the photo in the field 'image' and the style image in the "
                         "field 'style' (curl -F image=@photo.jpg -F style=@painting.jpg URL).")


def split_upload(body: bytes, content_type: str | None) -> tuple[bytes, bytes | None]:
    """(the photo, the style image or None) of a request body: the body itself, or the ``image`` and ``style``
    fields of a ``multipart/form-data`` body (AdaIN models take their style image this way).
    :class:`UsageError` for a form without ``image``, with other fields, or with a field given twice."""
    if not content_type or not content_type.lower().lstrip().startswith("multipart/form-data"):
        return body, None
    from email.parser import BytesParser
    from email.policy import HTTP

    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1") + b"\r\n\r\n"
                                                   + body)
    if not message.is_multipart():
        raise UsageError("the multipart/form-data body has no parts (or no boundary); expected the fields 'image' "
                         "and, for any-style models, 'style'.")
    fields: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name not in ("image", "style") or name in fields:
            raise UsageError(f"form field {name!r}: expected the fields 'image' (the photo) and 'style' (a style "
                             "image, for any-style models), each once.")
        fields[str(name)] = part.get_payload(decode=True) or b""
    if not fields.get("image"):
        raise UsageError("the form has no 'image' field (or it is empty); expected the photo there.")
    return fields["image"], fields.get("style") or None


def http_status_for(exc: BaseException) -> int:
    """413 over a size limit, 400 for a bad image or option, 500 for anything else."""
    if isinstance(exc, (ImageTooLargeError, MemoryError)):
        return 413
    if isinstance(exc, (ImageError, UsageError)):
        return 400
    return 500


def error_body(exc: BaseException) -> dict[str, Any]:
    """``{"error": one line, "code": the CLI's exit code}``."""
    if isinstance(exc, NstError):
        return {"error": " ".join(str(exc).split("\n")) or type(exc).__name__, "code": exc.exit_code}
    if isinstance(exc, MemoryError):
        return {"error": "not enough memory for this image on the replica; send a smaller image.",
                "code": ImageTooLargeError.exit_code}
    return {"error": f"internal error ({type(exc).__name__}); the server log has the details.", "code": 1}
