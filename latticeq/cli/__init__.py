"""The ``latticeq`` command line.

Each capability keeps its commands in one module of this package, exposing ``COMMANDS``
(a list of click commands). The CLI translates flags into explicit keyword arguments of the
library and never does mathematics itself; heavy libraries (torch, transformers, ray) are
imported inside the commands that need them so that ``latticeq --help`` stays fast.
"""

from __future__ import annotations

import importlib

import click

from latticeq import __version__

# One module per capability; each defines COMMANDS.
_COMMAND_MODULES = ["core", "design", "model", "layer", "draw"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="latticeq")
def main() -> None:
    """latticeq — quantization as closest-point search in lattices."""


for _name in _COMMAND_MODULES:
    for _command in importlib.import_module(f"{__name__}.{_name}").COMMANDS:
        main.add_command(_command)
