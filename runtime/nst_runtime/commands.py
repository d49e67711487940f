"""The ``nst`` command group and the small entry points behind the ``nst-*`` scripts.

``nst train …`` is ``nst-train …``, ``nst export …`` is ``nst-export …`` and so on: every subcommand is the
same click command object as its script, found in :data:`COMMANDS` and imported only when it runs (or when
``nst --help`` lists it). Adding a command is one entry in that table.

The scripts point here rather than at each stage's ``cli`` module so that even a stage whose command module
cannot be imported (its extra is not installed) answers in one line which extra to install.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from .errors import BackendUnavailableError
from .options import CONTEXT_SETTINGS, missing_module_error, run_command

#: subcommand name -> "module:attribute" of its click command
COMMANDS: dict[str, str] = {
    "train": "nst_train.cli:train",
    "gatys": "nst_train.cli:gatys",
    "export": "nst_export.cli:export",
    "stylize": "nst_runtime.cli:stylize",
    "bench": "nst_bench.cli:bench",
    "info": "nst_runtime.cli:info",
    "serve": "nst_serve.cli:serve",
    "models": "nst_runtime.models.cli:models",
}

#: subcommand name -> the pip extra its stage needs, named when its module cannot be imported (optional: without
#: an entry the message names the extra of the missing package)
EXTRAS: dict[str, str] = {"train": "train", "gatys": "train", "export": "export", "stylize": "runtime", "info": "runtime",
                          "bench": "bench", "serve": "serve", "models": "runtime"}


def load_command(name: str) -> click.Command:
    """Import and return the click command registered as ``name`` in :data:`COMMANDS`."""
    module_name, _, attribute = COMMANDS[name].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise missing_module_error(exc, prog=f"nst {name}", extra=EXTRAS.get(name)) from exc
    command = getattr(module, attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{COMMANDS[name]} is not a click command")
    return command


class _Unavailable(click.Command):
    """Stands in for a subcommand whose module cannot be imported: its help and its run say why."""

    def __init__(self, name: str, error: BackendUnavailableError) -> None:
        super().__init__(name, help=str(error), short_help="(not installed) " + str(error).split(";")[0],
                         context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
                         add_help_option=False)
        self.error = error

    def invoke(self, ctx: click.Context) -> Any:
        raise self.error


class LazyGroup(click.Group):
    """A group whose subcommands come from :data:`COMMANDS`, imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        try:
            return load_command(cmd_name)
        except BackendUnavailableError as exc:
            return _Unavailable(cmd_name, exc)


@click.group("nst", cls=LazyGroup, context_settings=dict(CONTEXT_SETTINGS), no_args_is_help=True,
             epilog="Each command is also a script of its own: nst-train, nst-gatys, nst-export, nst-stylize, "
                    "nst-bench, nst-serve, nst-info, nst-models. 'nst COMMAND --help' shows a command's options, "
                    "examples and "
                    "exit codes.")
@click.version_option(package_name="nst", prog_name="nst")
def nst() -> None:
    """nst: neural style transfer from training to deployment (train → export → stylize → bench)."""


def main(argv: Sequence[str] | None = None) -> int:
    """``nst``: returns the process exit code."""
    return run_command(nst, argv, prog="nst")


def _script(name: str, prog: str, argv: Sequence[str] | None = None) -> int:
    try:
        command = load_command(name)
    except BackendUnavailableError as exc:
        print(f"{prog}: error: {str(exc).replace(f'nst {name}', prog)}", file=sys.stderr)
        return exc.exit_code
    return run_command(command, argv, prog=prog)


def nst_script() -> NoReturn:
    sys.exit(main())


def nst_train_script() -> NoReturn:
    sys.exit(_script("train", "nst-train"))


def nst_gatys_script() -> NoReturn:
    sys.exit(_script("gatys", "nst-gatys"))


def nst_export_script() -> NoReturn:
    sys.exit(_script("export", "nst-export"))


def nst_stylize_script() -> NoReturn:
    sys.exit(_script("stylize", "nst-stylize"))


def nst_bench_script() -> NoReturn:
    sys.exit(_script("bench", "nst-bench"))


def nst_info_script() -> NoReturn:
    sys.exit(_script("info", "nst-info"))


def nst_serve_script() -> NoReturn:
    sys.exit(_script("serve", "nst-serve"))


def nst_models_script() -> NoReturn:
    sys.exit(_script("models", "nst-models"))


if __name__ == "__main__":
    sys.exit(main())
