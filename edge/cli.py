"""`edge-seg` command line.

The runtime commands (run, tune) are imported here; the training and conversion commands
are registered by edge_seg.train, .converters and .calibration through the
``edge_seg.commands`` entry-point group, so this module never imports them (nor TensorFlow)
until the user runs one.
"""
from __future__ import annotations

import sys
from importlib.metadata import entry_points

import click

from edge_seg import __version__, log
from edge_seg.errors import TRAIN_EXTRA_HINT, UserError

_GROUP = "edge_seg.commands"


class EdgeSegCLI(click.Group):
    def _plugins(self):
        return {ep.name: ep for ep in entry_points(group=_GROUP)}

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self._plugins()))

    def get_command(self, ctx, name):
        cmd = super().get_command(ctx, name)
        if cmd is None and name in self._plugins():
            try:
                cmd = self._plugins()[name].load()
            except ImportError as e:  # a broken or partial install must not break --help
                return _unavailable(name, e)
        return cmd

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except UserError as e:
            log.error("command.failed", str(e), exit_code=e.exit_code)
            sys.exit(e.exit_code)
        except ModuleNotFoundError as e:
            if e.name and e.name.split(".")[0] in {"tensorflow", "tf_keras", "tensorflow_model_optimization"}:
                log.error("command.failed", f"this command needs {e.name}; {TRAIN_EXTRA_HINT}",
                          exit_code=2, missing=e.name)
                sys.exit(2)
            raise


def _unavailable(name: str, error: ImportError) -> click.Command:
    def fail():
        raise UserError(f"'edge-seg {name}' is not available in this install ({error}); "
                        f"{TRAIN_EXTRA_HINT}")
    return click.Command(name, callback=fail, help="(unavailable in this install)")


@click.group(cls=EdgeSegCLI, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edge-seg")
@click.option("--log-level", type=click.Choice(log.LEVELS, case_sensitive=False), default="info",
              show_default=True, help="The least important lines printed: debug adds detail, "
                                      "warning keeps only warnings and errors (no banner, summary "
                                      "or progress).")
@click.option("--log-format", type=click.Choice(log.FORMATS), default="text", show_default=True,
              help="text: lines for people; json: one JSON object per line (time, level, event, "
                   "message and the event's figures) for journald and log shippers, no "
                   "progress bars. Goes before the command: edge-seg --log-format json run ...")
def main(log_level: str, log_format: str):
    """Real-time 8-category street-scene segmentation for small devices.

    \b
    Runtime (no TensorFlow needed):
      edge-seg run --camera 0            live overlay from a camera
      edge-seg run --source demo         built-in synthetic street clip
      edge-seg tune --models DIR         pick this device's fastest accurate variant
    With the [train] extra:
      edge-seg data check ROOT           validate a dataset
      edge-seg train --data ROOT         train a model
      edge-seg eval MODEL --data ROOT    score a .keras, .tflite or .onnx model
      edge-seg convert MODEL --int8      export TFLite variants
      edge-seg compare FLOAT VARIANTS    accuracy/size/speed table
    """
    log.configure(log_level.lower(), log_format)


from edge_seg.run.command import run  # noqa: E402  (the runtime command; imports nothing heavy at load)
from edge_seg.tune.command import tune  # noqa: E402  (runtime too: no TensorFlow)

main.add_command(run)
main.add_command(tune)
