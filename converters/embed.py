"""Embed each model's sidecar metadata into the model file, without converting again.

    python -m edge_seg.converters.embed models/unet-mobilenetv2-camvid-idd-int8.tflite [MODEL ...]

For every MODEL (.tflite or .onnx) the sidecar MODEL.json beside it is checked (edge-seg
metadata, recorded for this model's sha256) and embedded in the file, replacing any copy
embedded before; the model's sha256 (edge_seg.backends.metadata.model_sha256) does not change, so the
sidecar stays valid. Run it after editing a sidecar (e.g. adding measured accuracy) so that
the model file and its sidecar agree again. Needs no TensorFlow.
"""
from __future__ import annotations

import sys

import click

from edge_seg.errors import UserError


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("models", nargs=-1, required=True, type=click.Path(dir_okay=False))
def embed(models):
    """Embed MODEL.json into each MODEL (.tflite or .onnx) in place."""
    from edge_seg.backends.metadata import embed_sidecar, model_sha256

    for model in models:
        meta = embed_sidecar(model)
        click.echo(f"{model}: metadata embedded ({meta.get('variant', '?')}, "
                   f"model sha256 {model_sha256(model)[:12]})")


def main(argv=None) -> None:
    try:
        embed.main(args=argv, prog_name="python -m edge_seg.converters.embed", standalone_mode=False)
    except UserError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)


if __name__ == "__main__":
    main()
