"""`edge-seg calibrate`: choose and record an int8 calibration set."""
from __future__ import annotations

import click

from edge_seg import log as logs
from edge_seg.errors import UserError


@click.command()
@click.option("--data", "root", required=True, type=click.Path(file_okay=False),
              help="dataset root (Cityscapes, CamVid or folder layout)")
@click.option("--n", "n", default=200, show_default=True, type=int, help="frames to select")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="manifest to write, e.g. calibration/camvid-train.json")
@click.option("--strategy", type=click.Choice(["stratified", "random"]), default="stratified",
              show_default=True)
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--split", default="train", show_default=True)
@click.option("--format", "fmt", default="auto", show_default=True,
              type=click.Choice(["auto", "cityscapes", "camvid", "folder"]))
@click.option("--overwrite", is_flag=True, help="replace an existing -o manifest")
@click.option("--size", "size_text", default="512x256", show_default=True,
              help="model input size WxH the shares are measured at")
def calibrate(root, n, output, strategy, seed, split, fmt, size_text, overwrite):
    """Select a representative calibration set for int8 quantisation and write its manifest
    (file list, category pixel shares, seed, dataset fingerprint; never the images)."""
    from edge_seg.io.publish import check_output
    from edge_seg.preprocess import parse_size

    from .select import select, write_manifest

    try:
        size = parse_size(size_text)
    except ValueError as e:
        raise UserError(str(e)) from None
    check_output(output, "-o", inputs=[root], overwrite=overwrite, need=1 << 20)

    manifest = select(root, n, strategy, seed, size, fmt, split, logs.counter("reading masks", unit="mask"))
    write_manifest(output, manifest)
    click.echo(f"{output}: {manifest['n']} of {manifest['dataset']['frames_in_split']} "
               f"{split} frames ({strategy}, seed {seed})")
    click.echo(f"{'category':<13} {'selection':>9} {'split':>7} {'frames':>6}")
    for name, share in manifest["pixel_share"].items():
        click.echo(f"{name:<13} {share:>9.2%} {manifest['pixel_share_split'][name]:>7.2%} "
                   f"{manifest['frames_with_category'][name]:>6}")
