"""The one command-line vocabulary of nst: shared click options, logging set-up, and the command runner.

Every nst command is a click command built from these pieces, so the same thing has the same spelling
everywhere (``-o/--output``, ``--device auto|cpu|cuda|cuda:N``, ``-q``/``-v``, ``--threads``,
``--max-pixels``, ``--memory-limit``, ``--no-progress``) and fails the same way: :func:`run_command` turns
an :class:`NstError` into one line ``PROG: error: MESSAGE`` and the error's exit code (see
:data:`nst_runtime.errors.EXIT_CODES`).

This module sits at the bottom: it imports click, the standard library and ``nst_runtime`` only, so every
command answers ``--help`` on a runtime-only install.
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from .devices import DEVICE_HELP, Device, parse_device
from .errors import EXIT_CODES, BackendUnavailableError, NstError, UsageError, exit_code_table
from .interrupt import exit_code_of, sigterm_as_interrupt

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 110}

#: exit codes every command can return, whatever it does
COMMON_EXIT_CODES = (0, 1, 2, 6, 130, 143)


# ------------------------------------------------------------------------------------------ commands
class ExitCodesHelp:
    """Mixin for click commands and groups: the epilog (examples) is printed as written, followed by the
    command's exit codes.

    ``exit_codes``: the codes this command can return (rows of :data:`EXIT_CODES`, plus the common ones).
    ``extra``: the pip extra this command's stage needs (``nst[train]``…), named when a module is missing.
    """

    epilog: str | None

    def __init__(self, *args: Any, exit_codes: Sequence[int] = (), extra: str | None = None,
                 **kwargs: Any) -> None:
        kwargs.setdefault("context_settings", dict(CONTEXT_SETTINGS))
        super().__init__(*args, **kwargs)
        self.exit_codes = tuple(sorted(set(COMMON_EXIT_CODES) | set(exit_codes)))
        self.extra = extra
        unknown = [c for c in self.exit_codes if c not in EXIT_CODES]
        if unknown:
            raise ValueError(f"exit codes {unknown} are not in nst_runtime.errors.EXIT_CODES")

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # click re-wraps epilog paragraphs; examples must keep their lines and indentation.
        if self.epilog:
            formatter.write("\n" + self.epilog.rstrip("\n") + "\n")
        formatter.write("\nexit codes:\n" + exit_code_table(self.exit_codes) + "\n")


class NstCommand(ExitCodesHelp, click.Command):
    """A click command whose epilog (examples) is printed as written, followed by its exit codes
    (:class:`ExitCodesHelp`)."""

    def invoke(self, ctx: click.Context) -> Any:
        # kept on an exception: the runner names the command that failed, then clears the stack
        _running.append((ctx.command_path, self.extra))
        result = super().invoke(ctx)
        _running.pop()
        return result


def nst_command(name: str | None = None, *, exit_codes: Sequence[int] = (), extra: str | None = None,
                **kwargs: Any) -> Callable[[Callable[..., Any]], NstCommand]:
    """``@nst_command("nst-stylize", exit_codes=(3, 4, 8, 9), extra="runtime", help=..., epilog=...)``."""
    return click.command(name, cls=NstCommand, exit_codes=exit_codes, extra=extra, **kwargs)  # type: ignore[return-value]


#: (command path, extra) of the commands running now, innermost last: the prefix of error lines
_running: list[tuple[str, str | None]] = []


class AliasOption(click.Option):
    """An option whose old spellings (``hidden_aliases``) still parse but are not shown in help or errors."""

    def __init__(self, *args: Any, hidden_aliases: Sequence[str] = (), **kwargs: Any) -> None:
        decls = list(args[0]) if args else list(kwargs.pop("param_decls", []))
        super().__init__([*decls, *hidden_aliases], *args[1:], **kwargs)
        self.hidden_aliases = tuple(hidden_aliases)

    @contextmanager
    def _shown(self) -> Iterator[None]:
        opts = self.opts
        self.opts = [o for o in opts if o not in self.hidden_aliases]
        try:
            yield
        finally:
            self.opts = opts

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        with self._shown():
            return super().get_help_record(ctx)

    def get_error_hint(self, ctx: click.Context) -> str:
        with self._shown():
            return super().get_error_hint(ctx)


# ------------------------------------------------------------------------------------------ types
class DeviceType(click.ParamType):
    """``auto``, ``cpu``, ``cuda``, ``cuda:N`` (and ``mps`` for training) → :class:`Device`.

    ``as_text``: return the normalised string instead (``cuda`` stays ``cuda``, not ``cuda:0``: under torchrun
    plain ``cuda`` means each rank's own GPU), for libraries that take the string.
    """

    name = "device"

    def __init__(self, *, allow_mps: bool = False, as_text: bool = False) -> None:
        self.allow_mps = allow_mps
        self.as_text = as_text

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "auto|cpu|cuda|cuda:N" + ("|mps" if self.allow_mps else "")

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Device | str:
        try:
            device = parse_device(value, allow_mps=self.allow_mps)
        except UsageError as exc:
            self.fail(str(exc).removeprefix("device ").rstrip("."), param, ctx)
        if not self.as_text:
            return device
        return "cuda" if str(value).strip().lower() == "cuda" else str(device)


MEMORY_LIMIT_HELP = ("a size (4G, 512M, 1.5GiB: K/M/G/T and KiB/MiB/GiB/TiB are powers of 1024, KB/MB/GB/TB "
                     "of 1000), a share of the memory available now (60%; the container's limit where smaller), "
                     "or none (no budget)")


class MemoryLimitType(click.ParamType):
    name = "size"

    """``--memory-limit``: parsed by :func:`nst_runtime.memory.parse_memory_size` (the library's own parser,
    cgroup-aware for shares), so the command and ``memory_limit=`` take the same words: a size in bytes, or
    ``"none"`` / ``"auto"`` as given (no budget / the default)."""

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "SIZE|N%|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | str:
        from .memory import parse_memory_size

        if isinstance(value, str) and value.strip().lower() in ("none", "unlimited", "auto"):
            return value.strip().lower()
        try:
            return parse_memory_size(value)
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


# ------------------------------------------------------------------------------------------ options
def output_option(help: str, *, required: bool = True, default: str | Path | None = None,
                  old_names: Sequence[str] = ()) -> Callable[[F], F]:
    """``-o/--output PATH`` (a file or a folder, as ``help`` says). ``old_names`` (``--out``, ``--out-dir``)
    still parse, hidden, so existing scripts keep working."""
    # no default=None when there is none: click >= 8.3 would take None as a given value, not a missing one
    extra: dict[str, Any] = {"default": default, "show_default": True} if default is not None else {}
    return click.option("-o", "--output", "output", cls=AliasOption, hidden_aliases=tuple(old_names),
                        type=click.Path(path_type=Path), required=required and default is None, metavar="PATH",
                        help=help, **extra)


def device_option(help: str | None = None, *, default: str = "auto", allow_mps: bool = False,
                  as_text: bool = False) -> Callable[[F], F]:
    """``--device auto|cpu|cuda|cuda:N`` (``mps`` too for training) → :class:`Device` (or its string)."""
    text = help or DEVICE_HELP + (", or mps (Apple GPUs)" if allow_mps else "")
    return click.option("--device", type=DeviceType(allow_mps=allow_mps, as_text=as_text), default=default,
                        show_default=True, help=text)


def verbosity_options(f: F) -> F:
    """``-q/--quiet`` (errors only) and ``-v/--verbose`` (repeatable: ``-vv`` is debug)."""
    f = click.option("-v", "--verbose", count=True, help="more log output (-vv: debug)")(f)
    return click.option("-q", "--quiet", is_flag=True, help="errors only: no progress, no warnings")(f)


def no_progress_option(f: F) -> F:
    return click.option("--no-progress", is_flag=True, help="no progress bar (log lines only)")(f)


def threads_option(help: str = "CPU threads for the network (default: all cores)") -> Callable[[F], F]:
    return click.option("--threads", type=click.IntRange(min=1), default=None, metavar="N", help=help)


def max_pixels_option(default: int) -> Callable[[F], F]:
    return click.option("--max-pixels", type=click.IntRange(min=0), default=default, show_default=True,
                        metavar="N", help="refuse larger images (the decompression-bomb guard; 0: no limit)")


def memory_limit_option(help: str | None = None) -> Callable[[F], F]:
    """``--memory-limit SIZE|N%|none`` → bytes, or ``"none"``/``"auto"`` (None when not given: the library's
    default budget)."""
    return click.option("--memory-limit", type=MemoryLimitType(), default=None,
                        help=help or f"memory budget: {MEMORY_LIMIT_HELP}; larger calls run in tiles")


def positive_int(name: str, default: int | None, help: str, **kwargs: Any) -> Callable[[F], F]:
    """An integer option that must be >= 1 (checked while parsing: exit 2, one line)."""
    return click.option(name, type=click.IntRange(min=1), default=default, show_default=default is not None,
                        metavar="N", help=help, **kwargs)


#: the steps around the network (nst_runtime.steps), as command-line options; see :func:`step_options`
STEP_OPTION_NAMES = ("scale", "max_size", "output_size", "upsampler", "preserve_color", "strength")


def step_options(f: F) -> F:
    """``--scale``, ``--max-size``, ``--output-size``, ``--upsampler``, ``--preserve-color``, ``--strength``: what
    runs around the network (:mod:`nst_runtime.steps`). The command receives the ones given as one ``steps``
    dict, the keyword arguments of :meth:`nst_runtime.Stylizer.stylize`."""

    @functools.wraps(f)
    def with_steps(*args: Any, **kwargs: Any) -> Any:
        given = {name: kwargs.pop(name) for name in STEP_OPTION_NAMES}
        return f(*args, steps={k: v for k, v in given.items() if v is not None and v is not False}, **kwargs)

    options = [
        click.option("--scale", type=click.FloatRange(0, 4, min_open=True), metavar="F",
                     help="run the network at F times the image's width and height: 0.5 paints strokes twice as "
                          "large relative to the picture, in about a quarter of the time (default 1)"),
        click.option("--max-size", type=click.IntRange(min=1), metavar="PX",
                     help="run the network with the longest side at most PX pixels (large photos: faster, and "
                          "strokes that show)"),
        click.option("--output-size", type=click.Choice(("input", "processed")),
                     help="input (default): the result has the input's size, enlarged with --upsampler; "
                          "processed: the size the network ran at"),
        click.option("--upsampler", type=click.Choice(("guided", "bicubic")),
                     help="how a result of --scale/--max-size is enlarged: guided (default) adds back the photo's "
                          "edges; bicubic is plain"),
        click.option("--preserve-color", is_flag=True,
                     help="keep the photo's colours: only the luminance comes from the style (YCbCr)"),
        click.option("--strength", type=click.FloatRange(0, 1), metavar="0..1",
                     help="blend of the stylization with the photo, in Oklab: 1 the full style (default), 0 the "
                          "photo"),
    ]
    for option in reversed(options):
        with_steps = option(with_steps)
    return with_steps  # type: ignore[return-value]


#: what --style accepts (nst_runtime.styles)
STYLE_HELP = ("multi-style models: the style by NAME or INDEX, or a blend \"I:W,J:W\" (names or indices with "
              "weights, e.g. \"3:0.5,12:0.5\"); nst-info MODEL lists the styles")


def style_option(f: F) -> F:
    """``--style NAME|INDEX|"I:W,J:W"``: which style of a multi-style model (``style=`` of
    :meth:`nst_runtime.Stylizer.open`)."""
    return click.option("--style", metavar="NAME|INDEX|I:W,...", help=STYLE_HELP)(f)


def style_image_option(f: F) -> F:
    """``--style-image IMAGE|"a.jpg:0.7,b.jpg:0.3"``: the style of an arbitrary-style (AdaIN) model: any painting
    or photo, at its own resolution (``style=`` of :meth:`nst_runtime.Stylizer.open`)."""
    return click.option("--style-image", metavar="IMAGE|A:W,B:W",
                        help="arbitrary-style (AdaIN) models: the style image (any painting or photo, any size), or "
                             "a blend \"a.jpg:0.7,b.jpg:0.3\"; --strength is then AdaIN's alpha on features (1 the "
                             "full style, 0 the content)")(f)


def use_only_gpu(index: int) -> None:
    """Make GPU ``index`` (counted among the visible ones) the only visible GPU, so that TensorRT, torch and the
    sidecar's GPU name all see it as device 0. Must run before CUDA is initialised in this process."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [v.strip() for v in visible.split(",")] if visible else None
    if ids is not None and index >= len(ids):
        raise UsageError(f"--device cuda:{index}: only {len(ids)} GPU(s) are visible (CUDA_VISIBLE_DEVICES="
                         f"{visible}).")
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        if index != 0:
            logging.getLogger(__name__).warning(
                "CUDA is already initialised in this process: --device cuda:%d cannot take effect; GPU 0 is used",
                index)
        return
    os.environ["CUDA_VISIBLE_DEVICES"] = ids[index] if ids is not None else str(index)


# ------------------------------------------------------------------------------------------ logging
class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record comes (test runners swap it)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class _Formatter(logging.Formatter):
    def __init__(self, prog: str, fmt: str | None, datefmt: str | None) -> None:
        super().__init__(fmt, datefmt)
        self.prog = prog
        self.plain = fmt is None

    def format(self, record: logging.LogRecord) -> str:
        if not self.plain:
            return super().format(record)
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        if record.levelno >= logging.WARNING:  # upper case: never mistaken for the one "error:" line
            return f"{self.prog}: {record.levelname}: {message}"
        return f"{self.prog}: {message}"


_handler: logging.Handler | None = None


def setup_logging(prog: str, *, verbose: int = 0, quiet: bool = False, default: int = logging.WARNING,
                  fmt: str | None = None, datefmt: str | None = None) -> int:
    """One stderr handler on the root logger; returns the level.

    ``quiet``: errors only. Otherwise ``default`` (WARNING, or INFO for commands whose log lines are their
    progress), one step lower per ``-v``. Python warnings (Pillow's, for example) go through logging too, one
    line each as WARNING records of ``py.warnings``, so ``-q`` hides them. ``fmt`` None: ``PROG: message``.
    """
    global _handler
    level = logging.ERROR if quiet else max(logging.DEBUG, default - 10 * verbose)
    root = logging.getLogger()
    if _handler is not None and _handler in root.handlers:
        root.removeHandler(_handler)
    _handler = _StderrHandler()
    _handler.setFormatter(_Formatter(prog, fmt, datefmt))
    root.addHandler(_handler)
    root.setLevel(level)
    # libraries that set up their own handlers would print twice
    for name in ("nst_runtime", "nst_train", "nst_export", "nst_bench"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    _capture_warnings()
    return level


def teardown_logging() -> None:
    """Undo :func:`setup_logging` (the runner calls it, so that ``main()`` called in a process leaves no trace)."""
    global _handler
    if _handler is not None:
        logging.getLogger().removeHandler(_handler)
        _handler = None
    _release_warnings()


_previous_showwarning: Callable[..., Any] | None = None


def _show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                  file: Any = None, line: str | None = None) -> None:
    """One log line per Python warning (``logging.captureWarnings`` would print the source line too).

    Deprecation notices are addressed to developers of the library that raised them (Ray's pydantic models,
    say), not to the user of a command: they go to the debug log (``-vv``)."""
    text = " ".join(str(message).split())
    deprecation = issubclass(category, (DeprecationWarning, PendingDeprecationWarning))
    logging.getLogger("py.warnings").log(logging.DEBUG if deprecation else logging.WARNING, "%s (%s)", text,
                                         category.__name__)


def _capture_warnings() -> None:
    global _previous_showwarning
    if warnings.showwarning is not _show_warning:
        _previous_showwarning = warnings.showwarning
        warnings.showwarning = _show_warning


def _release_warnings() -> None:
    global _previous_showwarning
    if warnings.showwarning is _show_warning and _previous_showwarning is not None:
        warnings.showwarning = _previous_showwarning
    _previous_showwarning = None


# ------------------------------------------------------------------------------------------ the runner
#: a missing module -> the extra that brings it (None: the running command's own stage extra)
_EXTRA_FOR_MODULE: dict[str, str | None] = {
    "torch": None, "safetensors": None, "tqdm": None, "numpy": None, "PIL": None,
    "onnx": None, "onnxscript": None, "onnxconverter_common": None, "onnxruntime": None, "matplotlib": None,
    "av": "video", "tritonclient": "triton", "ray": "serve", "openvino": "openvino",
}


def missing_module_error(exc: ModuleNotFoundError, *, prog: str, extra: str | None) -> BackendUnavailableError:
    """One line naming the missing module and the extra to install (exit 6)."""
    module = (exc.name or "").split(".")[0] or str(exc)
    wanted = _EXTRA_FOR_MODULE.get(module, None) or extra
    fix = f"pip install 'nst[{wanted}]'" if wanted else "reinstall nst"
    what = f"{prog} needs the {extra} stage" if extra and wanted == extra else f"{prog} needs it here"
    return BackendUnavailableError(f"the Python package {module!r} is not installed; {what}. Fix: {fix}.")


class _NotRaised(click.ClickException):
    """Stands in for click's NoArgsIsHelpError on click 8.1, which prints the help by itself."""


_NoArgsIsHelp: type[click.ClickException] = getattr(click.exceptions, "NoArgsIsHelpError", _NotRaised)


def run_command(command: click.Command, argv: Sequence[str] | None = None, *, prog: str) -> int:
    """Run ``command`` on ``argv`` (default: ``sys.argv[1:]``) and return the exit code; never raises for a
    user error and never prints a traceback for one.

    - :class:`NstError` → ``PROG: error: MESSAGE``, the error's exit code;
    - click usage errors (unknown option, bad value) → one line, exit 2;
    - a missing optional package → one line naming the extra to install, exit 6;
    - an :class:`OSError` nst did not wrap → one line, exit 1;
    - Ctrl-C → ``PROG: interrupted``, exit 130; SIGTERM is handled the same way (cleanups run), exit 143.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    _invocation[:] = [prog, *args]
    try:
        try:
            with sigterm_as_interrupt():
                result = command.main(args=args, prog_name=prog, standalone_mode=False)
        finally:
            teardown_logging()
    except _NoArgsIsHelp as exc:  # click >= 8.2: a group called without a subcommand
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        return exc.exit_code
    except click.ClickException as exc:  # usage errors: bad option, missing argument, bad value
        where = exc.ctx.command_path if getattr(exc, "ctx", None) else prog  # type: ignore[union-attr]
        hint = f" (see {where} --help)" if isinstance(exc, click.UsageError) else ""
        _error_line(where, exc.format_message() + hint)
        return exc.exit_code
    except NstError as exc:
        _error_line(_current_prog(prog), str(exc))
        return exc.exit_code
    except ModuleNotFoundError as exc:
        current, extra = _running[-1] if _running else (prog, getattr(command, "extra", None))
        err = missing_module_error(exc, prog=current, extra=extra)
        _error_line(current, str(err))
        return err.exit_code
    except (click.Abort, KeyboardInterrupt) as exc:
        code = exit_code_of(exc)
        print(f"{_current_prog(prog)}: {'terminated (SIGTERM)' if code != 130 else 'interrupted'}", file=sys.stderr)
        return code
    except OSError as exc:  # a file system error nst did not wrap: still one line, no traceback
        _error_line(_current_prog(prog), str(exc))
        return 1
    finally:
        _running.clear()
    if result is None:
        return 0
    return int(result)


_invocation: list[str] = []


def invocation() -> list[str]:
    """The command line :func:`run_command` is running (program name first), e.g. to print how to resume."""
    return list(_invocation)


def _current_prog(default: str) -> str:
    return _running[-1][0] if _running else default


def _error_line(prog: str, message: str) -> None:
    print(f"{prog}: error: {message}", file=sys.stderr)
