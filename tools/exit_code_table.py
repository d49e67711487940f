"""Print the exit-code table of docs/robustness.md from the code: nst_runtime.errors.EXIT_CODES and the codes each
command's --help lists (the ``exit_codes`` of every command in nst_runtime.commands.COMMANDS).

    python tools/exit_code_table.py        # paste over the table under "## Exit codes" in docs/robustness.md
"""

from __future__ import annotations

from nst_runtime.commands import COMMANDS, load_command
from nst_runtime.errors import EXIT_CODES


def exit_code_markdown() -> str:
    names = list(COMMANDS)
    codes = {name: load_command(name).exit_codes for name in names}
    lines = ["| code | meaning | " + " | ".join(f"`{n}`" for n in names) + " |",
             "|---|---|" + "---|" * len(names)]
    for code, meaning in EXIT_CODES.items():
        lines.append(f"| {code} | {meaning} | " + " | ".join("✓" if code in codes[n] else "" for n in names) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(exit_code_markdown())
