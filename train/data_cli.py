"""`edge-seg data check` and `edge-seg data preview`: see a dataset before training on it;
`edge-seg data export` and `data import`: collected frames through a labelling tool."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import numpy as np

from edge_seg import labels
from edge_seg import log as logs
from edge_seg.errors import UserError

from . import labeling

FORMAT_CHOICE = click.Choice(["auto", "cityscapes", "camvid", "folder"])
TRAINING_SPLITS = ("train", "val")
# what each split is for, said beside its count: a set meant only for evaluation then reads
# as such instead of as a training set with its splits missing
PURPOSE = {
    "train": "training ('edge-seg train')",
    "val": "choosing epochs while training ('edge-seg train')",
    "test": "evaluation only ('edge-seg eval --split test')",
    "drive-train": "training, drive-disjoint from drive-val",
    "drive-val": "evaluation on unseen drives ('edge-seg eval --split drive-val')",
}
# where a split comes from when it is not the folder of the same name
SOURCE = {"cityscapes": {"train": "official train/, minus every sixth city",
                         "val": "every sixth city of the official train/",
                         "test": "the official val/ folder"}}


def folder_options(f):
    f = click.option("--mapping", type=click.Path(dir_okay=False),
                     help="folder format: JSON/YAML file, mask value -> category name or 'ignore'")(f)
    f = click.option("--mask-suffix", default="", help="folder format: mask stem suffix, e.g. _mask")(f)
    f = click.option("--image-suffix", default="", help="folder format: image stem suffix")(f)
    return f


@click.group()
def data():
    """Inspect a dataset: counts, problems, category shares, previews."""


def _check_one(sample):
    """(problem or None, pixel counts per mask value: catIds, set codes, IGNORE)."""
    from .datasets import read_pair
    try:
        _, mask = read_pair(sample)
    except UserError as e:
        return str(e), None
    return None, np.bincount(mask.ravel(), minlength=256)


@data.command()
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=FORMAT_CHOICE, default="auto", show_default=True,
              help="dataset layout; auto-detected from the folder structure")
@folder_options
@click.option("--limit", type=int, default=0, help="read at most N pairs per split (0 = all)")
@click.option("--splits", metavar="A,B",
              help="the splits that must be there, and the only ones read: test (or drive-val) "
                   "for a set meant only for evaluation [default: train and val must be there, "
                   "every split present is read]")
def check(root, fmt, limit, splits, **folder):
    """Validate a dataset at ROOT: pairs per split and what each split is for, images
    without masks and masks without images, unreadable files, unknown label values, size
    mismatches, and the per-category pixel share of each split checked, set-valued
    (coarse) labels per set and in total. Exits 1 when it finds problems."""
    from .datasets import scan
    wanted = _wanted_splits(splits) if splits else list(TRAINING_SPLITS)
    layout = scan(root, fmt, **folder)
    click.echo(f"{root}: {layout.fmt} dataset")
    if layout.fmt == "folder" and (root / "meta").is_dir():
        click.echo(labeling.summary(labeling.read_collection(root)))
        # 'edge-seg adapt' holds out a collection's latest frames itself: a few frames that
        # all hash into train are not a problem here
        wanted = wanted if splits else ["train"]
    problems = _missing_splits(root, fmt, layout, wanted, folder)
    read = wanted if splits else list(layout.splits)
    problems += [f"image without mask: {p}" for p in layout.orphan_images]
    problems += [f"mask without image: {p}" for p in layout.orphan_masks]
    shares = {}
    with ThreadPoolExecutor(4) as pool:
        for split in read:
            samples = layout.splits.get(split) or layout.derived.get(split)
            if not samples:
                continue
            samples = samples[:limit] if limit else samples
            totals = np.zeros(256, np.int64)
            results = pool.map(_check_one, samples)
            for problem, counts in logs.progress(results, total=len(samples),
                                                 desc=f"reading {split}", unit="pair", leave=False):
                if problem:
                    problems.append(problem)
                else:
                    totals += counts
            shares[split] = totals

    click.echo(_counts_table(layout))
    if shares:
        click.echo(_share_table(shares))
    if problems:
        click.echo(f"\n{len(problems)} problem(s):")
        for p in problems[:50]:
            click.echo(f"  {p}")
        if len(problems) > 50:
            click.echo(f"  ... and {len(problems) - 50} more")
        raise SystemExit(1)
    click.echo("\nno problems found")


def _wanted_splits(text: str) -> list[str]:
    from .datasets import DRIVE_SPLITS, SPLITS
    wanted = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in wanted if s not in SPLITS + DRIVE_SPLITS]
    if not wanted or unknown:
        raise UserError(f"--splits {text}: expected a comma-separated list of "
                        f"{', '.join(SPLITS + DRIVE_SPLITS)}")
    return wanted


def _missing_splits(root, fmt, layout, wanted, folder) -> list[str]:
    """A problem line per asked split without pairs, read through the same function as
    'edge-seg train' and 'eval', so a dataset this command passes is one they accept. Where
    a split is not the folder of its name (Cityscapes), the message says which folder it is."""
    from .datasets import load_split
    problems = []
    for split in wanted:
        try:
            load_split(root, fmt, split, **folder)
        except UserError as e:
            origin = SOURCE.get(layout.fmt, {})
            have = [s for s in layout.splits if layout.splits[s] and s not in wanted]
            said = [f"'{s}' is {origin[s]}" for s in [split] + have if s in origin]
            hint = f"to check only {', '.join(have)}, pass --splits {','.join(have)}" if have else ""
            problems.append(": ".join([str(e)] + ["; ".join(said)] * bool(said) + [hint] * bool(hint)))
    return problems


def _counts_table(layout) -> str:
    origin = SOURCE.get(layout.fmt, {})
    rows = [f"{'split':<8}{'pairs':>8}  for"]
    rows += [f"{split:<8}{len(samples):>8}  {PURPOSE.get(split, '')}"
             + (f"; {origin[split]}" if split in origin else "")
             for split, samples in layout.splits.items()]
    rows += _derived_counts(layout)
    rows.append(f"images without masks: {len(layout.orphan_images)}, "
                f"masks without images: {len(layout.orphan_masks)}")
    return "\n".join(rows)


def _derived_counts(layout) -> list[str]:
    """The drive-disjoint view of the same frames, when it differs from train/val."""
    if all(layout.derived.get(f"drive-{s}") is layout.splits.get(s) for s in ("train", "val")):
        return []
    return [f"{split:<12}{len(samples):>4}  (drive-disjoint; same frames, regrouped)"
            for split, samples in layout.derived.items()]


def _share_table(shares: dict) -> str:
    """Pixel share per mask value: the 8 categories, each set of categories a coarse label
    allows ('construction|nature'), all set-valued pixels together, then ignore."""
    from edge_seg.mapping import set_code_mask, set_name
    splits = list(shares)
    sets = [int(v) for v in np.flatnonzero(set_code_mask(np.arange(256)) & (sum(shares.values()) > 0))]
    width = max([14] + [len(set_name(v)) + 2 for v in sets])

    def row(name, count_of):
        cells = "".join(f"{100 * count_of(shares[s]) / max(shares[s].sum(), 1):>9.1f}" for s in splits)
        return f"{name:<{width}}{cells}"

    lines = ["", "pixel share per category (%)", f"{'category':<{width}}" + "".join(f"{s:>9}" for s in splits)]
    lines += [row(name, lambda c, i=i: c[i]) for i, name in enumerate(labels.CATEGORY_NAMES)]
    if sets:
        lines.append("set-valued labels (one of these categories):")
        lines += [row(set_name(v), lambda c, v=v: c[v]) for v in sets]
        lines.append(row("set-valued", lambda c: c[sets].sum()))
    if any(shares[s][labels.IGNORE] for s in splits):
        lines.append(row("ignore", lambda c: c[labels.IGNORE]))
    return "\n".join(lines)


@data.command()
@click.argument("root", type=click.Path(file_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default="preview.png",
              show_default=True, help="PNG to write")
@click.option("--format", "fmt", type=FORMAT_CHOICE, default="auto", show_default=True)
@click.option("--split", default="train", show_default=True)
@click.option("-n", "--count", type=int, default=8, show_default=True, help="how many frames")
@click.option("--seed", type=int, default=0, show_default=True, help="which frames (random pick)")
@click.option("--width", type=int, default=480, show_default=True, help="width of each tile")
@click.option("--overwrite", is_flag=True, help="replace an existing -o file")
@folder_options
def preview(root, output, fmt, split, count, seed, width, overwrite, **folder):
    """Write a grid of images beside their colour masks (and a legend) to a PNG; ignored
    pixels are white, coarse (set-valued) labels grey."""
    import cv2

    from edge_seg.io.publish import atomic_write_bytes, check_output

    from .datasets import load_split, read_pair
    check_output(output, "-o", inputs=[root], overwrite=overwrite, need=1 << 20)
    samples = load_split(root, fmt, split, **folder)
    rng = np.random.default_rng(seed)
    picked = [samples[i] for i in sorted(rng.choice(len(samples), min(count, len(samples)), replace=False))]
    from edge_seg.mapping import set_code_mask
    # IGNORE shown white, coarse (set-valued) labels grey
    palette = np.vstack([labels.colors_bgr(), [[255, 255, 255]], [[160, 160, 160]]]).astype(np.uint8)
    rows = []
    for sample in picked:
        rgb, mask = read_pair(sample)
        height = round(width * rgb.shape[0] / rgb.shape[1])
        image = cv2.resize(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), (width, height), interpolation=cv2.INTER_AREA)
        colour = palette[np.where(set_code_mask(mask), labels.NUM_CATEGORIES + 1,
                                  np.minimum(mask, labels.NUM_CATEGORIES))]
        colour = cv2.resize(colour, (width, height), interpolation=cv2.INTER_NEAREST)
        tile = np.hstack([image, colour])
        cv2.putText(tile, sample.name, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        rows.append(cv2.resize(tile, (2 * width, height)) if rows and tile.shape[0] != rows[0].shape[0] else tile)
    grid = np.vstack(rows + [_legend(2 * width)])
    ok, png = cv2.imencode(".png", grid)
    if not ok:
        raise UserError(f"{output}: could not encode the preview")
    atomic_write_bytes(output, png.tobytes(), "-o")
    click.echo(f"wrote {output} ({len(picked)} frames from {split})")


def _legend(width: int) -> np.ndarray:
    import cv2
    bar = np.full((28, width, 3), 255, np.uint8)
    step = width // labels.NUM_CATEGORIES
    for c, colour in zip(labels.CATEGORIES, labels.colors_bgr()):
        x = c.id * step
        cv2.rectangle(bar, (x + 4, 6), (x + 20, 22), tuple(int(v) for v in colour), -1)
        cv2.putText(bar, c.name, (x + 24, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return bar


def labeling_options(output_help: str):
    """--format (from the one table of labelling tools), -o and --overwrite."""
    tools = ", ".join(f"{name} ({tool.title})" for name, tool in labeling.FORMATS.items())

    def wrap(f):
        f = click.option("--overwrite", is_flag=True, help="replace the contents of a non-empty -o folder")(f)
        f = click.option("-o", "--output", type=click.Path(path_type=Path), required=True, help=output_help)(f)
        return click.option("--format", "fmt", type=click.Choice(list(labeling.FORMATS)), required=True,
                            help=f"the labelling tool: {tools}")(f)
    return wrap


@data.command("export")
@click.argument("collection", type=click.Path(path_type=Path))
@labeling_options("folder to write: the images to upload and the tool's import files")
@click.option("--image-url", default="", metavar="PREFIX",
              help="labelstudio: where the tasks find the images, PREFIX<stem>.png "
                   "[default: Label Studio's local files, /data/local-files/?d=OUT/images/]")
def export(collection, fmt, output, image_url, overwrite):
    """Write the frames of a collection (`edge-seg run --collect COLLECTION`) with the
    model's masks as pre-labels, for CVAT or Label Studio; prints what to do in the tool.
    The collection is only read."""
    how_to = labeling.export_collection(collection, output, fmt, overwrite, image_url)
    click.echo(f"wrote {output}\n\n{how_to}")


@data.command("import")
@click.argument("collection", type=click.Path(path_type=Path))
@click.argument("annotations", type=click.Path(path_type=Path))
@labeling_options("the folder dataset to write (new; the collection is never rewritten)")
def import_(collection, annotations, fmt, output, overwrite):
    """Bring corrected labels back from the tool's export ANNOTATIONS (CVAT: its
    'Segmentation mask 1.1' zip; Label Studio: its JSON export): a new folder dataset of the
    frames it labels (images, masks as category ids, pixels left unlabelled 255 = ignore,
    each frame's record marked labelled), ready for `edge-seg data check` and training."""
    count = labeling.import_annotations(collection, annotations, output, fmt, overwrite)
    click.echo(f"wrote {output}: {count} labelled frame(s) of {collection}")
