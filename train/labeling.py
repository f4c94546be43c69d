"""Collected frames to a labelling tool and back: `edge-seg data export` and `data import`.

A collection (`edge-seg run --collect DIR`: images/, masks/ holding the model's pre-labels,
meta/, mapping.json) goes out in a format a labelling tool imports, with the pre-labels as
the starting point, and the tool's export of the corrected labels comes back as a NEW folder
dataset that training reads as it is. ``FORMATS`` is the one table of tools: what each
writes, how its export is read, and what the user does in the tool.

Colours and names come from ``edge_seg.labels``. CVAT (through Datumaro's VOC code) treats
the colour (0, 0, 0) as its background, the pixels nobody painted; that is void's colour,
so void is CVAT's background and an extra ``ignore`` label lets the labeller leave pixels
out of training. In Label Studio every category is a brush and unpainted pixels are ignore.
"""
from __future__ import annotations

import io
import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from edge_seg import labels
from edge_seg.errors import UserError
from edge_seg.io.publish import (atomic_write_bytes, atomic_write_json, check_output, discard,
                                 partial_path, publish_folder)

IMAGES, MASKS, META = "images", "masks", "meta"


# ---------------------------------------------------------------------- the collection

@dataclass(frozen=True)
class Frame:
    stem: str
    image: Path
    mask: Path
    meta: dict


def read_collection(root: Path) -> list[Frame]:
    """The collected frames in capture order: those whose meta JSON exists (the collector
    publishes it last, so a frame without one is incomplete and left out)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root}: collection folder not found")
    missing = [d for d in (IMAGES, MASKS, META) if not (root / d).is_dir()]
    if missing:
        raise UserError(f"{root}: not a collection folder (no {', '.join(d + '/' for d in missing)}); "
                        f"'edge-seg run --collect DIR' writes one")
    frames = []
    for path in sorted((root / META).glob("*.json")):
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as e:
            raise UserError(f"{path}: unreadable frame record ({e})") from None
        frame = Frame(path.stem, root / IMAGES / f"{path.stem}.png", root / MASKS / f"{path.stem}.png", meta)
        for part in (frame.image, frame.mask):
            if not part.is_file():
                raise UserError(f"{part}: missing; {path.name} records a frame without it")
        frames.append(frame)
    if not frames:
        raise UserError(f"{root}: no collected frames (meta/ holds no frame record)")
    return frames


def read_prelabel(frame: Frame) -> np.ndarray:
    """The model's pre-label: catIds (and IGNORE) in one channel."""
    mask = cv2.imread(str(frame.mask), cv2.IMREAD_UNCHANGED)
    if mask is None or mask.ndim != 2 or mask.dtype != np.uint8:
        raise UserError(f"{frame.mask}: not a single-channel 8-bit mask")
    bad = np.setdiff1d(np.unique(mask), list(range(labels.NUM_CATEGORIES)) + [labels.IGNORE])
    if bad.size:
        raise UserError(f"{frame.mask}: values {bad.tolist()[:10]} are not category ids")
    return mask


def image_size(frame: Frame) -> tuple[int, int]:
    """(height, width) of a frame's image, read from the file."""
    image = cv2.imread(str(frame.image), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise UserError(f"{frame.image}: unreadable image")
    return image.shape[:2]


def mapping_json() -> dict:
    """The folder dataset's mapping file: mask value -> category, from the label table."""
    return {**{str(c.id): c.name for c in labels.CATEGORIES}, str(labels.IGNORE): "ignore"}


def summary(frames: list[Frame]) -> str:
    """One line for `data check`: how many frames, how many labelled, why they were kept."""
    done = sum(bool(f.meta.get("labelled")) for f in frames)
    reasons: dict[str, int] = {}
    for f in frames:
        reason = str(f.meta.get("reason", "unknown"))
        reasons[reason] = reasons.get(reason, 0) + 1
    kept = ", ".join(f"{r} {n}" for r, n in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])))
    return f"collection: {len(frames)} frames, {done} labelled, {len(frames) - done} not; kept for: {kept}"


# ---------------------------------------------------------------------- colours

def _png(image: np.ndarray, what: str) -> bytes:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise UserError(f"{what}: could not encode the PNG")
    return data.tobytes()


def _pack(rgb: np.ndarray) -> np.ndarray:
    """RGB triples as one int each, so colours compare and look up as numbers."""
    rgb = np.asarray(rgb, np.int64)
    return (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]


def paint(mask: np.ndarray, colours: dict[int, tuple[int, int, int]], what: str = "mask") -> np.ndarray:
    """A mask of codes as an RGB image, one colour per code."""
    bad = np.setdiff1d(np.unique(mask), list(colours))
    if bad.size:
        raise UserError(f"{what}: values {bad.tolist()[:10]} have no colour")
    lut = np.zeros((256, 3), np.uint8)
    for code, colour in colours.items():
        lut[code] = colour
    return lut[mask]


def unpaint(rgb: np.ndarray, codes: dict[tuple[int, int, int], int], what: str) -> np.ndarray:
    """An RGB label image back to codes; a colour without a code is one error line."""
    keys = np.array([_pack(c) for c in codes], np.int64)
    values = np.array(list(codes.values()), np.uint8)
    packed = _pack(rgb)
    order = np.argsort(keys)
    found = np.clip(np.searchsorted(keys[order], packed), 0, len(keys) - 1)
    known = keys[order][found] == packed
    if not known.all():
        colour = tuple(int(v) for v in rgb[~known][0])
        raise UserError(f"{what}: colour {colour} ({int((~known).sum())} pixels) is not in the "
                        f"label map")
    return values[order][found]


# ---------------------------------------------------------------------- CVAT

CVAT_BACKGROUND = "background"
CVAT_IGNORE = ("ignore", (255, 255, 255))


def cvat_labels() -> list[tuple[str, tuple[int, int, int], int]]:
    """(name, RGB, code) of CVAT's label map: void is its background, then the scored
    categories, then ``ignore``, a colour outside the table for pixels to leave out."""
    void = labels.CATEGORIES[labels.VOID]
    rows = [(CVAT_BACKGROUND, void.color, void.id)]
    rows += [(c.name, c.color, c.id) for c in labels.CATEGORIES if c.id != labels.VOID]
    return rows + [(CVAT_IGNORE[0], CVAT_IGNORE[1], labels.IGNORE)]


def _voc_palette(n: int) -> np.ndarray:
    """Pascal VOC's colour for index i (bit-interleaved), the palette of SegmentationObject."""
    ids = np.arange(n)
    palette = np.zeros((n, 3), np.uint8)
    for shift in range(7, -1, -1):
        for channel in range(3):
            palette[:, channel] |= (((ids >> (channel + 3 * (7 - shift))) & 1) << shift).astype(np.uint8)
    return palette


def _instances(mask: np.ndarray, background: int) -> np.ndarray:
    """SegmentationObject: one instance per category present, VOC-palette coloured."""
    present = [int(v) for v in np.unique(mask) if v != background]
    index = np.zeros(256, np.uint8)
    for i, code in enumerate(present, start=1):
        index[code] = i
    return _voc_palette(256)[index[mask]]


def write_cvat_annotations(masks_by_stem: dict[str, np.ndarray], zip_path: Path) -> None:
    """CVAT's "Segmentation mask 1.1" zip of catId masks (IGNORE allowed), published
    atomically. A labeller's masks (or ground truth standing in for one) go through here."""
    table = cvat_labels()
    colours = {code: colour for _, colour, code in table}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("labelmap.txt", "# label:color_rgb:parts:actions\n" + "".join(
            f"{name}:{','.join(map(str, colour))}::\n" for name, colour, _ in table))
        z.writestr("ImageSets/Segmentation/default.txt", "".join(f"{s}\n" for s in masks_by_stem))
        for stem, mask in masks_by_stem.items():
            rgb = paint(mask, colours, f"mask {stem}")
            z.writestr(f"SegmentationClass/{stem}.png", _png(rgb[..., ::-1], stem))
            z.writestr(f"SegmentationObject/{stem}.png",
                       _png(_instances(mask, labels.VOID)[..., ::-1], stem))
    atomic_write_bytes(zip_path, buffer.getvalue())


def _cvat_codes(path: Path, text: str) -> dict[tuple[int, int, int], int]:
    names = {name: code for name, _, code in cvat_labels()}
    names.update({c.name: c.id for c in labels.CATEGORIES})
    codes: dict[tuple[int, int, int], int] = {}
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split(":")
        try:
            colour = tuple(int(v) for v in fields[1].split(","))
        except (IndexError, ValueError):
            colour = ()
        if len(colour) != 3:
            raise UserError(f"{path}: labelmap.txt line {n} is not 'name:r,g,b::' ({line.strip()!r})")
        if fields[0] not in names:
            raise UserError(f"{path}: labelmap.txt names label {fields[0]!r}, which is none of "
                            f"{', '.join(names)}")
        if codes.get(colour, names[fields[0]]) != names[fields[0]]:
            raise UserError(f"{path}: labelmap.txt gives colour {colour} to two different categories")
        codes[colour] = names[fields[0]]
    return codes


def read_cvat_annotations(path: Path) -> dict[str, np.ndarray]:
    """Stem -> code mask from CVAT's "Segmentation mask 1.1" export (SegmentationClass
    coloured by its labelmap.txt): only the frames the export holds a mask for."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: annotation file not found")
    if not zipfile.is_zipfile(path):
        raise UserError(f"{path}: not a zip file; expected CVAT's 'Segmentation mask 1.1' export")
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        maps = [n for n in names if n.rsplit("/", 1)[-1] == "labelmap.txt"]
        if len(maps) != 1:
            raise UserError(f"{path}: not a CVAT 'Segmentation mask 1.1' export "
                            f"({'no' if not maps else 'more than one'} labelmap.txt)")
        base = maps[0][: -len("labelmap.txt")]
        codes = _cvat_codes(path, z.read(maps[0]).decode("utf-8", "replace"))
        prefix = f"{base}SegmentationClass/"
        found = {}
        for name in sorted(n for n in names if n.startswith(prefix) and n.lower().endswith(".png")):
            rgb = cv2.imdecode(np.frombuffer(z.read(name), np.uint8), cv2.IMREAD_COLOR)
            if rgb is None:
                raise UserError(f"{path}: {name} is not a readable PNG")
            found[Path(name).stem] = unpaint(rgb[..., ::-1], codes, f"{path}: {name}")
    return found


def _export_cvat(frames: list[Frame], out: Path, options: dict) -> None:
    write_cvat_annotations({f.stem: read_prelabel(f) for f in frames}, out / "cvat-annotations.zip")
    raw = [{"name": name, "color": "#%02x%02x%02x" % colour, "attributes": []}
           for name, colour, _ in cvat_labels() if name != CVAT_BACKGROUND]
    atomic_write_json(out / "cvat-labels.json", raw)


CVAT_HOW_TO = """\
In CVAT:
  1. Projects or Tasks > Create a new task; Labels > Raw: paste {out}/cvat-labels.json.
     (void is CVAT's background: pixels nobody paints; paint 'ignore' to leave pixels out.)
  2. Select files: the {n} images in {out}/images/ (sorted by name); Submit.
  3. In the task: Actions > Upload annotations > format "Segmentation mask 1.1" >
     {out}/cvat-annotations.zip (the model's pre-labels).
  4. Correct the masks in the job (brush / polygon tools), save.
  5. Actions > Export task dataset > format "Segmentation mask 1.1" (images not needed).
  6. edge-seg data import {collection} THAT.zip -o LABELLED --format cvat"""


# ---------------------------------------------------------------------- Label Studio

# Run lengths the encoder can write, in bits, as label-studio-converter's brush.py sets them
RLE_SIZES = (3, 4, 8, 16)
RLE_WORD = 8
MAX_PIXELS = 1 << 26  # a hostile size must not allocate gigabytes; cameras stay far below


def encode_rle(values: np.ndarray) -> list[int]:
    """Label Studio's brush RLE (thi.ng rle-pack) of a flat uint8 array: a 32-bit count,
    the word size, four run-length widths, then runs; bytes as a list of ints."""
    values = np.asarray(values, np.uint8).ravel()
    header = f"{values.size:032b}{RLE_WORD - 1:05b}" + "".join(f"{s - 1:04b}" for s in RLE_SIZES)
    change = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate([[0], change]) if values.size else np.zeros(0, int)
    lengths = np.diff(np.concatenate([starts, [values.size]]))
    tokens = [header]
    for start, length in zip(starts.tolist(), lengths.tolist()):
        word = f"{int(values[start]):08b}"
        while length > 0:
            run = min(length, 1 << RLE_SIZES[-1])
            if run == 1:  # a literal group of one value
                tokens.append(f"000{0:0{RLE_SIZES[0]}b}{word}")
            else:
                index = next(i for i, s in enumerate(RLE_SIZES) if run <= 1 << s)
                tokens.append(f"1{index:02b}{run - 1:0{RLE_SIZES[index]}b}{word}")
            length -= run
    bits = "".join(tokens)
    bits += "0" * (-len(bits) % 8)
    return np.packbits(np.frombuffer(bits.encode(), np.uint8) - ord("0")).tolist()


def decode_rle(data, what: str = "rle", expected: int | None = None) -> np.ndarray:
    """The flat uint8 array of a Label Studio brush RLE (literal groups and runs); with
    ``expected``, a header announcing another count is refused before anything is allocated."""
    try:
        raw = np.asarray(data, np.int64)
    except (TypeError, ValueError, OverflowError):
        raw = np.zeros(0, np.int64)
    if raw.ndim != 1 or raw.size < 7 or raw.min() < 0 or raw.max() > 255:
        raise UserError(f"{what}: not a Label Studio brush RLE (a list of bytes)")
    bits = (np.unpackbits(raw.astype(np.uint8)) + ord("0")).tobytes().decode()
    pos = 0

    def read(n: int) -> int:
        nonlocal pos
        if pos + n > len(bits):
            raise UserError(f"{what}: the brush RLE ends early")
        pos += n
        return int(bits[pos - n:pos], 2)

    count, word = read(32), read(5) + 1
    if expected is not None and count != expected:
        raise UserError(f"{what}: the brush RLE holds {count} values, not the {expected} of its size")
    sizes = [read(4) + 1 for _ in range(4)]
    out = np.zeros(count, np.uint8)
    i = 0
    while i < count:
        repeat = read(1)
        j = min(count, i + 1 + read(sizes[read(2)]))
        if repeat:
            out[i:j] = read(word)
        else:
            out[i:j] = [read(word) for _ in range(j - i)]
        i = j
    return out


def labeling_config() -> str:
    """Label Studio's labelling interface: one brush per category, in the table's colours."""
    brushes = "".join(f'    <Label value="{c.name}" background="#%02x%02x%02x"/>\n' % c.color
                      for c in labels.CATEGORIES)
    return ('<View>\n  <Image name="image" value="$image" zoom="true"/>\n'
            f'  <BrushLabels name="tag" toName="image">\n{brushes}  </BrushLabels>\n</View>\n')


def labelstudio_result(mask: np.ndarray) -> list[dict]:
    """One brush region per category present (IGNORE pixels stay unpainted)."""
    height, width = mask.shape
    result = []
    for c in labels.CATEGORIES:
        painted = np.where(mask == c.id, 255, 0).astype(np.uint8)
        if not painted.any():
            continue
        result.append({"id": f"{c.name}", "from_name": "tag", "to_name": "image", "type": "brushlabels",
                       "original_width": width, "original_height": height, "image_rotation": 0,
                       "value": {"format": "rle", "rle": encode_rle(np.repeat(painted.ravel(), 4)),
                                 "brushlabels": [c.name]}})
    return result


def write_labelstudio_tasks(masks_by_stem: dict[str, np.ndarray], path: Path, image_url: str,
                            model: str = "pre-label") -> None:
    """Label Studio tasks JSON, the masks as predictions; ``stem`` in each task's data is
    how `data import` finds the frame again."""
    tasks = [{"data": {"image": f"{image_url}{stem}.png", "stem": stem},
              "predictions": [{"model_version": model, "result": labelstudio_result(mask)}]}
             for stem, mask in masks_by_stem.items()]
    atomic_write_json(path, tasks)


def _task_stem(task: dict, where: str) -> str:
    data = task.get("data") if isinstance(task, dict) else None
    if not isinstance(data, dict) or not (data.get("stem") or data.get("image")):
        raise UserError(f"{where}: a task without data.stem or data.image")
    if data.get("stem"):
        return str(data["stem"])
    # an uploaded file is renamed <8 hex>-<name> by Label Studio
    name = Path(str(data["image"]).split("?d=")[-1]).stem
    return name.split("-", 1)[1] if len(name) > 9 and name[8] == "-" else name


def _brush_layer(item: dict, where: str) -> tuple[int, np.ndarray]:
    value = item.get("value") or {}
    names = value.get("brushlabels") or []
    if item.get("type") != "brushlabels" or len(names) != 1 or names[0] not in labels.CATEGORY_IDS:
        raise UserError(f"{where}: region {item.get('type')} {names} is not one brush of "
                        f"{', '.join(labels.CATEGORY_NAMES)}")
    try:
        width, height = int(item["original_width"]), int(item["original_height"])
    except (KeyError, TypeError, ValueError):
        width = height = 0
    if not 0 < width * height <= MAX_PIXELS or width < 0:
        raise UserError(f"{where}: a brush region without a sensible original_width x original_height")
    flat = decode_rle(value.get("rle", item.get("rle")), where, expected=width * height * 4)
    # the alpha channel is the brush; a stroke's soft edge counts where it is mostly opaque
    return labels.CATEGORY_IDS[names[0]], flat.reshape(height, width, 4)[..., 3] >= 128


def read_labelstudio_annotations(path: Path) -> dict[str, np.ndarray]:
    """Stem -> catId mask from Label Studio's JSON export: each task's last annotation that
    was not cancelled; unpainted pixels IGNORE, later regions over earlier ones."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: annotation file not found")
    try:
        tasks = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        tasks = None
    if not isinstance(tasks, list):
        raise UserError(f"{path}: not a Label Studio JSON export (a list of tasks)")
    found = {}
    for n, task in enumerate(tasks):
        stem = _task_stem(task, f"{path}: task {n}")
        done = [a for a in task.get("annotations") or [] if not a.get("was_cancelled")]
        if not done:
            continue
        mask = None
        for item in done[-1].get("result") or []:
            code, layer = _brush_layer(item, f"{path}: task {stem}")
            mask = np.full(layer.shape, labels.IGNORE, np.uint8) if mask is None else mask
            if layer.shape != mask.shape:
                raise UserError(f"{path}: task {stem}: regions of different sizes")
            mask[layer] = code
        if mask is not None:
            found[stem] = mask
    return found


def _export_labelstudio(frames: list[Frame], out: Path, options: dict) -> None:
    write_labelstudio_tasks({f.stem: read_prelabel(f) for f in frames}, out / "tasks.json",
                            options["image_url"], str(frames[0].meta.get("model", "pre-label")))
    atomic_write_bytes(out / "labeling-config.xml", labeling_config().encode())


LABELSTUDIO_HOW_TO = """\
In Label Studio:
  1. Serve the images: start it with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true and
     LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={out_parent}; the tasks point at
     {image_url}<stem>.png (change with --image-url).
  2. Create a project; Settings > Labeling Interface > Code: paste {out}/labeling-config.xml.
  3. Settings > Cloud Storage > Add Source Storage > Local files, path {out}/images,
     without syncing it (the tasks come from the next step).
  4. Import: {out}/tasks.json (the model's pre-labels come as predictions).
  5. Correct the masks (brush, eraser: erased pixels are left out of training), submit.
  6. Export > JSON; then: edge-seg data import {collection} THAT.json -o LABELLED --format labelstudio"""


# ---------------------------------------------------------------------- the table

@dataclass(frozen=True)
class Format:
    title: str
    write: Callable[[list[Frame], Path, dict], None]   # frames -> the tool's import, in a folder
    read: Callable[[Path], dict]                        # the tool's export -> stem: code mask
    how_to: str


FORMATS = {
    "cvat": Format("CVAT Segmentation mask 1.1", _export_cvat, read_cvat_annotations, CVAT_HOW_TO),
    "labelstudio": Format("Label Studio brush labels, RLE", _export_labelstudio,
                          read_labelstudio_annotations, LABELSTUDIO_HOW_TO),
}


def _copy_images(frames: list[Frame], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for f in frames:
        shutil.copyfile(f.image, folder / f.image.name)


def export_collection(root: Path, out: Path, fmt: str, overwrite: bool = False,
                      image_url: str = "") -> str:
    """Write the tool's import of a collection into the folder ``out``; returns the how-to."""
    frames = read_collection(root)
    check_output(out, "-o", inputs=[root], overwrite=overwrite, folder=True, need=1 << 20)
    url = image_url or f"/data/local-files/?d={Path(out).name}/images/"
    tmp = partial_path(out)
    try:
        _copy_images(frames, tmp / IMAGES)
        FORMATS[fmt].write(frames, tmp, {"image_url": url})
        publish_folder(tmp, out, "-o")
    finally:
        discard(tmp)
    return FORMATS[fmt].how_to.format(out=out, n=len(frames), collection=root, image_url=url,
                                      out_parent=Path(out).absolute().parent)


def import_annotations(root: Path, annotations: Path, out: Path, fmt: str,
                       overwrite: bool = False) -> int:
    """A NEW folder dataset of the frames the tool's export labels; returns their count."""
    frames = {f.stem: f for f in read_collection(root)}
    masks = FORMATS[fmt].read(annotations)
    unknown = sorted(set(masks) - set(frames))
    if unknown:
        raise UserError(f"{annotations}: labels frame {unknown[0]}, which {root} does not hold "
                        f"(is it the export of another collection?)")
    if not masks:
        raise UserError(f"{annotations}: labels none of the frames of {root} (in Label Studio, "
                        f"a prediction counts once it is submitted as an annotation)")
    check_output(out, "-o", inputs=[root, annotations], overwrite=overwrite, folder=True, need=1 << 20)
    tmp = partial_path(out)
    try:
        _write_labelled(root, [frames[s] for s in sorted(masks)], masks, tmp, annotations)
        publish_folder(tmp, out, "-o")
    finally:
        discard(tmp)
    return len(masks)


def _write_labelled(root: Path, frames: list[Frame], masks: dict, tmp: Path, source: Path) -> None:
    atomic_write_json(tmp / "mapping.json", mapping_json())
    _copy_images(frames, tmp / IMAGES)
    for f in frames:
        mask, (height, width) = masks[f.stem], image_size(f)
        if mask.shape != (height, width):
            raise UserError(f"{source}: the mask of {f.stem} is {mask.shape[1]}x{mask.shape[0]}, "
                            f"its frame {width}x{height}")
        atomic_write_bytes(tmp / MASKS / f"{f.stem}.png", _png(mask, f.stem))
        atomic_write_json(tmp / META / f"{f.stem}.json", {**f.meta, "labelled": True})
