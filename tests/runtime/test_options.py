"""The shared command-line vocabulary (nst_runtime.options): types, aliases, logging and the runner."""

from __future__ import annotations

import errno
import logging
import warnings

import click
import pytest
from nst_runtime.devices import Device
from nst_runtime.errors import EXIT_CODES, ImageError, UsageError
from nst_runtime.options import (
    device_option,
    memory_limit_option,
    nst_command,
    output_option,
    run_command,
    setup_logging,
    verbosity_options,
)

GiB, MiB = 1 << 30, 1 << 20


@pytest.mark.parametrize("text, expected", [
    ("4G", 4 * GiB), ("4g", 4 * GiB), ("512M", 512 * MiB), ("1.5GiB", int(1.5 * GiB)), ("4GB", 4 * 10**9),
    ("100k", 100 * 1024), ("2000000", 2_000_000), (" 3 MiB ", 3 * MiB), ("1T", 1 << 40), (".5G", GiB // 2),
])
def test_memory_sizes(text, expected):
    from nst_runtime.memory import parse_memory_size

    assert parse_memory_size(text) == expected
    probe, seen = _probe()
    assert run_command(probe, ["-o", "x", "--memory-limit", text], prog="probe") == 0
    assert seen["memory_limit"] == expected


def test_memory_percentages_use_the_cgroup_aware_available_memory(monkeypatch):
    """--memory-limit N% is a share of nst_runtime.memory.available_memory (the container's limit where it is
    smaller than MemAvailable): the one parser the library uses too."""
    from nst_runtime import memory

    monkeypatch.setattr(memory, "available_memory", lambda: 1000)
    assert memory.parse_memory_size("60%") == 600
    probe, seen = _probe()
    assert run_command(probe, ["-o", "x", "--memory-limit", "60%"], prog="probe") == 0
    assert seen["memory_limit"] == 600


def test_memory_limit_none_means_no_budget_as_the_docs_say():
    from nst_runtime.memory import resolve_memory_limit

    probe, seen = _probe()
    assert run_command(probe, ["-o", "x", "--memory-limit", "none"], prog="probe") == 0
    assert resolve_memory_limit(seen["memory_limit"]) is None


@pytest.mark.parametrize("text", ["", "abc", "0", "0G", "-1G", "4X", "4 G B", "150%", "0%", "-5%", "x%", "G"])
def test_bad_memory_limits_are_usage_errors(text, capsys):
    from nst_runtime.memory import parse_memory_size

    with pytest.raises(UsageError, match="memory limit"):
        parse_memory_size(text)
    probe, _ = _probe()
    assert run_command(probe, ["-o", "x", "--memory-limit", text], prog="probe") == 2


def _probe(**extra):
    """A small command that records what it parsed, built from the shared decorators."""
    seen: dict = {}

    @nst_command("probe", exit_codes=(4,), epilog="examples:\n  probe -o x     keep   this   spacing\n",
                 help="A test command.")
    @output_option("where it goes", old_names=("--out",))
    @device_option(**extra)
    @memory_limit_option()
    @verbosity_options
    def probe(output, device, memory_limit, quiet, verbose):
        setup_logging("probe", verbose=verbose, quiet=quiet)
        seen.update(output=output, device=device, memory_limit=memory_limit, quiet=quiet, verbose=verbose)
        return 0

    return probe, seen


def test_shared_options_parse_and_old_spellings_stay_hidden(capsys):
    probe, seen = _probe()
    assert run_command(probe, ["--out", "x.png", "--device", "cuda:1", "--memory-limit", "2G", "-vv"],
                       prog="probe") == 0
    assert str(seen["output"]) == "x.png" and seen["device"] == Device("cuda", 1)
    assert seen["memory_limit"] == 2 * GiB and seen["verbose"] == 2
    assert run_command(probe, ["--help"], prog="probe") == 0
    text = capsys.readouterr().out
    assert "-o, --output PATH" in text and "--out " not in text and "--out," not in text
    assert "  probe -o x     keep   this   spacing" in text  # examples printed as written
    codes = text.split("exit codes:")[1]
    assert EXIT_CODES[4] in codes and EXIT_CODES[130] in codes and EXIT_CODES[9] not in codes


@pytest.mark.parametrize("argv, needle", [
    (["-o", "x", "--device", "gpu"], "'--device'"),
    (["-o", "x", "--device", "mps"], "'--device'"),
    (["-o", "x", "--memory-limit", "lots"], "'--memory-limit'"),
    ([], "'-o' / '--output'"),
    (["-o", "x", "--frobnicate"], "--frobnicate"),
])
def test_usage_errors_are_one_line_exit_2(capsys, argv, needle):
    probe, _ = _probe()
    assert run_command(probe, argv, prog="probe") == 2
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("probe: error: ") and needle in lines[0], err
    assert "--out'" not in lines[0]  # the hidden spelling is not suggested


def test_training_devices_allow_mps_and_keep_plain_cuda():
    probe, seen = _probe(allow_mps=True, as_text=True)
    for given, kept in (("mps", "mps"), ("cuda", "cuda"), ("CUDA:2", "cuda:2"), ("auto", "auto"), ("1", "cuda:1")):
        assert run_command(probe, ["-o", "x", "--device", given], prog="probe") == 0
        assert seen["device"] == kept


def _failing(exc: BaseException):
    @nst_command("boom", help="fails")
    def boom():
        raise exc

    return boom


@pytest.mark.parametrize("exc, code, needle", [
    (ImageError("x.png: cannot decode"), 4, "boom: error: x.png: cannot decode"),
    (OSError(errno.EIO, "Input/output error", "disk.img"), 1, "boom: error: [Errno 5] Input/output error"),
    (ModuleNotFoundError("No module named 'av'", name="av"), 6, "pip install 'nst[video]'"),
    (KeyboardInterrupt(), 130, "boom: interrupted"),
])
def test_runner_turns_failures_into_one_line_and_a_code(capsys, exc, code, needle):
    assert run_command(_failing(exc), [], prog="boom") == code
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert len([ln for ln in err.splitlines() if ln.strip()]) == 1


def test_missing_stage_module_names_the_commands_extra(capsys):
    @nst_command("staged", extra="train", help="needs torch")
    def staged():
        raise ModuleNotFoundError("No module named 'torch'", name="torch")

    assert run_command(staged, [], prog="nst-staged") == 6
    err = capsys.readouterr().err
    assert "'torch' is not installed" in err and "pip install 'nst[train]'" in err


def test_python_warnings_go_through_logging_and_quiet_hides_them(capsys):
    @nst_command("warner", help="warns")
    @verbosity_options
    def warner(quiet, verbose):
        setup_logging("warner", verbose=verbose, quiet=quiet)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("Palette images with Transparency expressed in bytes", UserWarning, stacklevel=1)
        logging.getLogger("nst_runtime.x").warning("a library warning")
        return 0

    assert run_command(warner, [], prog="warner") == 0
    err = capsys.readouterr().err
    assert err.splitlines() == ["warner: WARNING: Palette images with Transparency expressed in bytes (UserWarning)",
                                "warner: WARNING: a library warning"]
    assert run_command(warner, ["-q"], prog="warner") == 0
    assert capsys.readouterr().err == ""
    # the runner leaves no handler and no warnings capture behind
    assert not logging.getLogger().handlers or all(type(h).__name__ != "_StderrHandler"
                                                   for h in logging.getLogger().handlers)
    assert warnings.showwarning.__module__ != "nst_runtime.options"


def test_library_deprecation_notices_are_debug_lines_only(capsys):
    """Third-party DeprecationWarnings (Ray's pydantic models under a test runner's filters) are for developers:
    not on stderr by default, shown with -vv."""
    @nst_command("deprecator", help="warns")
    @verbosity_options
    def deprecator(quiet, verbose):
        setup_logging("deprecator", verbose=verbose, quiet=quiet)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.warn("Field extra keys are deprecated", DeprecationWarning, stacklevel=1)
            warnings.warn("Field extra keys will go", PendingDeprecationWarning, stacklevel=1)
        return 0

    assert run_command(deprecator, [], prog="deprecator") == 0
    assert capsys.readouterr().err == ""
    assert run_command(deprecator, ["-vv"], prog="deprecator") == 0
    assert "Field extra keys are deprecated (DeprecationWarning)" in capsys.readouterr().err


def test_every_command_documents_its_exit_codes():
    from nst_runtime.commands import COMMANDS, load_command

    for name in COMMANDS:
        command = load_command(name)
        ctx = click.Context(command, info_name=f"nst-{name}")
        text = command.get_help(ctx)
        assert "exit codes:" in text and "examples:" in text, name
        for code in command.exit_codes:
            assert EXIT_CODES[code] in text.replace("\n", " ") or EXIT_CODES[code][:40] in text, (name, code)
