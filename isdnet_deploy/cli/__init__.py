"""``isdnet-deploy``: one click group; each command lives in its own module."""

from __future__ import annotations

import logging
import signal
import sys
import threading

import click

from .. import __version__
from ..errors import IsdnetError
from .common import printable

EXIT_FAILURE = 1  # the work failed (bad file, engine error…): one line says why
EXIT_USAGE = 2  # the command line is wrong (click's own convention)
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT (128 + 2)
EXIT_TERMINATED = 143  # SIGTERM (128 + 15)


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM so ``finally`` blocks clean up as on Ctrl-C."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


class _Group(click.Group):
    """One line on stderr and a conventional exit code for every way a command can end
    early: an IsdnetError (1), Ctrl-C (130) and SIGTERM (143); no traceback. Temporary
    files are removed on all three paths (they unwind through ``finally``)."""

    def invoke(self, ctx: click.Context) -> object:
        main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGTERM, _raise_terminated) if main_thread else None
        try:
            return super().invoke(ctx)
        except IsdnetError as exc:
            click.echo(f"error: {printable(exc.for_cli())}", err=True)
            sys.exit(EXIT_FAILURE)
        except KeyboardInterrupt:
            click.echo("\ninterrupted: nothing half-written was left behind", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Terminated:
            click.echo("terminated: nothing half-written was left behind", err=True)
            sys.exit(EXIT_TERMINATED)
        finally:
            if main_thread:
                signal.signal(signal.SIGTERM, previous)


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
    from .deploy import deploy_command, recipes_command
    from .export import export_command, inspect_command
    from .infer import evaluate_command, infer_command
    from .quantize import quantize_command
    from .samples import samples_command
    from .serve import serve_command

    for command in (demo_command, export_command, inspect_command, quantize_command,
                    build_command, deploy_command, recipes_command, benchmark_command,
                    compare_command, infer_command, evaluate_command, samples_command,
                    serve_command):
        main.add_command(command)


_register()
