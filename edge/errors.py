"""The exceptions users see as a one-line message instead of a traceback, and the exit
codes a supervisor (systemd, a shell script) can act on.

Exit codes of every ``edge-seg`` command:

==  =====================================================================================
0   done: the source ended, the work completed, or Ctrl-C / SIGTERM / SIGHUP stopped it
    and every output was finalised
1   an unexpected internal failure (a bug: the traceback is printed)
2   bad input or usage: a missing file, a malformed model, an option that cannot work
3   a live source (camera, stream) was lost and did not come back within
    ``--reconnect-timeout``: restarting may help
4   an output could not be written (no space, permission denied, ...): the results
    computed so far were printed, the partial file was not published
5   a second Ctrl-C / SIGTERM / SIGHUP came while the first one's stop was under way:
    the run stopped at once, unfinished outputs were removed, none was published half
==  =====================================================================================
"""

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_USAGE = 2
EXIT_SOURCE_LOST = 3
EXIT_OUTPUT_FAILED = 4
EXIT_ABANDONED = 5


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
