"""The ``latticeq`` command line.

Each capability keeps its commands in one module of this package, exposing ``COMMANDS``
(a list of click commands). The CLI translates flags into explicit keyword arguments of the
library and never does mathematics itself; heavy libraries (torch, transformers, ray) are
imported inside the commands that need them so that ``latticeq --help`` stays fast.
"""

from __future__ import annotations

import importlib
import sys

import click

from latticeq import __version__
from latticeq.cli.common import USER_ERROR

# One module per capability; each defines COMMANDS.
_COMMAND_MODULES = ["core", "design", "model", "layer", "draw"]


class _Latticeq(click.Group):
    """The command group with one error convention for every command.

    A user error — a bad option (click's usage errors), a failed check inside a command
    (:class:`click.ClickException`, :func:`latticeq.cli.common.fail`), or a file system
    refusal (``OSError``: permission denied, read-only file system, disk full) — prints one
    line ``error: …`` on stderr and exits with status 2; Ctrl-C prints ``interrupted`` and
    exits with 130. Anything else is a bug and keeps its traceback.
    """

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.Exit as exc:
            sys.exit(exc.exit_code)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            click.echo(f"error: {exc.format_message()}{hint}", err=True)
            sys.exit(USER_ERROR)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(USER_ERROR)
        except (click.exceptions.Abort, KeyboardInterrupt):
            click.echo("interrupted", err=True)
            sys.exit(130)
        except OSError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(USER_ERROR)
        sys.exit(0)


@click.group(cls=_Latticeq, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="latticeq")
def main() -> None:
    """latticeq — quantization as closest-point search in lattices."""


for _name in _COMMAND_MODULES:
    for _command in importlib.import_module(f"{__name__}.{_name}").COMMANDS:
        main.add_command(_command)
