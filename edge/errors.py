"""The exceptions users see as a one-line message instead of a traceback, and the exit
codes a supervisor (systemd, a shell script) can act on.

``EXIT_CODES`` is the one table of exit codes: ``edge-seg run --help`` prints it and the
table in docs/serving.md is generated from it (``python -m edge_seg.errors``), so a test
can hold the page to the code.
"""
from __future__ import annotations

import textwrap
from typing import NamedTuple

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_SOURCE_LOST = 3
EXIT_OUTPUT_FAILED = 4
EXIT_ABANDONED = 5


class ExitCode(NamedTuple):
    code: str      # a number, or a rule such as 128+N
    name: str
    meaning: str
    supervisor: str  # what systemd or a script should do about it
    restart: bool | None  # whether a supervisor restarts the run (None: not a run's exit)


EXIT_CODES = (
    ExitCode(str(EXIT_OK), "EXIT_OK",
             "done: the source ended, `--max-frames` was reached, the work completed, or "
             "Ctrl-C / SIGTERM / SIGHUP stopped it and every output was finalised",
             "nothing: a clean end (`systemctl stop` ends a run this way)", False),
    ExitCode(str(EXIT_INTERNAL), "EXIT_INTERNAL",
             "an unexpected internal failure (a bug: the traceback is printed); `data check` "
             "and `compare` also use 1 for \"problems found\" / \"budget exceeded\"",
             "restart, and report the traceback", True),
    ExitCode(str(EXIT_USAGE), "EXIT_USAGE",
             "bad input or usage, one `error:` line: a missing file, a malformed model, an "
             "option that cannot work, an output that is an input, the `--serve` port in use; "
             "nothing was run",
             "do not restart: fix the command or its files", False),
    ExitCode(str(EXIT_SOURCE_LOST), "EXIT_SOURCE_LOST",
             "a live source (camera, stream) was lost and did not come back within "
             "`--reconnect-timeout`; the summary was printed first",
             "restart: the camera or stream may be back", True),
    ExitCode(str(EXIT_OUTPUT_FAILED), "EXIT_OUTPUT_FAILED",
             "an output could not be written (no space, permission denied, read-only): the "
             "results so far were printed, the partial file was not published",
             "do not restart: free space or fix permissions first", False),
    ExitCode(str(EXIT_ABANDONED), "EXIT_ABANDONED",
             "`run`: a second Ctrl-C / SIGTERM / SIGHUP came while the first one's stop was "
             "under way: stopped at once, unfinished outputs removed, none published half",
             "nothing: whoever sent the second signal wanted the run gone", False),
    ExitCode("128+N", "(signal)",
             "`convert` stopped by signal N before it finished (130 Ctrl-C, 143 SIGTERM, "
             "129 SIGHUP); no half-written variant is left",
             "whatever the sender of the signal intended", None),
)


def exit_codes_markdown() -> str:
    """The exit-code table as Markdown, for docs/serving.md."""
    lines = ["| code | name | meaning | what a supervisor should do |", "| --- | --- | --- | --- |"]
    for e in EXIT_CODES:
        name = f"`{e.name}`" if e.name.startswith("EXIT_") else e.name
        lines.append(f"| {e.code} | {name} | {e.meaning} | {e.supervisor} |")
    return "\n".join(lines) + "\n"


def exit_codes_help() -> str:
    """The exit codes of a run, as ``--help`` text (click keeps a ``\\b`` block as written)."""
    rows = [textwrap.fill(f"{e.meaning} (supervisor: {e.supervisor})".replace("`", ""), width=84,
                          initial_indent=f"  {e.code}  ", subsequent_indent="     ")
            for e in EXIT_CODES if e.restart is not None]
    return "\b\nExit codes (for systemd and scripts):\n" + "\n".join(rows)


class UserError(Exception):
    """Bad input or environment: the message names the thing and says what to do."""

    exit_code = EXIT_USAGE


class SourceLostError(UserError):
    """A live source stopped delivering frames and did not come back in time."""

    exit_code = EXIT_SOURCE_LOST


class OutputError(UserError):
    """An output (video, frames folder, report, model file) could not be written."""

    exit_code = EXIT_OUTPUT_FAILED


class RunAbandoned(UserError):
    """A second stop signal: the outputs not yet finalised were removed, not published."""

    exit_code = EXIT_ABANDONED


# what to do when a command or a model format needs TensorFlow and this install lacks it
TRAIN_EXTRA_HINT = ("install the training extra [train] (in a checkout: make install, or "
                    "pip install '.[train]'; see docs/deploying.md)")


if __name__ == "__main__":
    print(exit_codes_markdown(), end="")
