"""``isdnet-deploy``: one click group; each command lives in its own module."""

from __future__ import annotations

import logging
import sys

import click

from .. import __version__
from ..errors import IsdnetError


class _Group(click.Group):
    """Turns every IsdnetError into one line on stderr and exit code 1, no traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except IsdnetError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="isdnet-deploy")
@click.option("-v", "--verbose", is_flag=True, help="Log details (info level).")
def main(verbose: bool) -> None:
    """ISDNet from PyTorch checkpoint to fast engines, with the paper's FPS protocol.

    Example: isdnet-deploy demo
    """
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s: %(message)s", stream=sys.stderr)


def _register() -> None:
    from .benchmark import benchmark_command
    from .build import build_command
    from .compare import compare_command
    from .demo import demo_command
    from .export import export_command, inspect_command
    from .infer import evaluate_command, infer_command
    from .quantize import quantize_command
    from .samples import samples_command

    for command in (demo_command, export_command, inspect_command, quantize_command,
                    build_command, benchmark_command, compare_command, infer_command,
                    evaluate_command, samples_command):
        main.add_command(command)


_register()
