"""The frames ``edge-seg tune`` measures on: a calibration manifest (with its labels for
``--drop-vs labels``), a folder or glob of images, a video, a camera, or the demo scenes."""
from __future__ import annotations

import time
from pathlib import Path

from edge_seg.errors import UserError


def _spread(items: list, n: int) -> list:
    """n items spread evenly over ``items`` (all of them when there are fewer)."""
    if len(items) <= n:
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def _manifest_frames(path: Path, n: int, root_override=None, with_labels: bool = False):
    """(frames, description, ground-truth category masks or None) of a calibration manifest."""
    import cv2

    from edge_seg.manifest import manifest_files, manifest_root, read_manifest
    manifest = read_manifest(path, option="--frames")
    root = manifest_root(manifest, path, root_override, root_option="--frames-root",
                         option="--frames")
    entries = _spread(manifest_files(manifest), n)
    frames, gts = [], []
    lut = _label_lut(path, manifest, root) if with_labels else None
    for entry in entries:
        image = cv2.imread(str(root / entry["image"]), cv2.IMREAD_COLOR)
        if image is None:
            raise UserError(f"--frames {path}: {root / entry['image']} is missing or not an image")
        frames.append(image)
        if lut is not None:
            gts.append(_read_label(path, root, entry, lut, image.shape[:2]))
    text = f"{len(frames)} frames of the manifest {path.name} ({root})"
    return frames, text + (", with their labels" if with_labels else ""), (gts if with_labels else None)


def _label_lut(path: Path, manifest: dict, root: Path):
    """Raw mask value -> category for the manifest's dataset format (the evaluation tables
    of edge_seg.labels, as 'edge-seg eval' and 'compare' use them)."""
    from edge_seg import labels
    from edge_seg.mapping import find_mapping, mapping_lut, read_mapping
    fmt = (manifest.get("dataset") or {}).get("format")
    if fmt == "camvid":
        return labels.camvid_lut()
    if fmt == "cityscapes":
        return labels.cityscapes_lut(for_eval=True)
    if fmt == "folder" and find_mapping(root):
        return mapping_lut(read_mapping(find_mapping(root)))
    raise UserError(f"--frames {path}: cannot read the labels of a {fmt!r} dataset here "
                    "(camvid, cityscapes, or folder with mapping.json); use --drop-vs float")


def _read_label(path: Path, root: Path, entry: dict, lut, shape):
    import cv2

    from edge_seg import labels
    if not entry.get("mask"):
        raise UserError(f"--frames {path}: {entry['image']} has no mask; --drop-vs labels needs "
                        "a manifest with masks")
    raw = cv2.imread(str(root / entry["mask"]), cv2.IMREAD_UNCHANGED)
    if raw is None or raw.ndim != 2:
        raise UserError(f"--frames {path}: {root / entry['mask']} is missing or not a one-channel mask")
    if raw.shape != tuple(shape):
        raise UserError(f"--frames {path}: mask {entry['mask']} is {raw.shape[1]}x{raw.shape[0]} but "
                        f"its image is {shape[1]}x{shape[0]}")
    try:
        return labels.apply_lut(raw, lut, what=str(root / entry["mask"]))
    except ValueError as e:
        raise UserError(str(e)) from None


def _read_source(spec: str, kind: str, reader, n: int) -> list:
    """Up to ``n`` valid frames of an open reader, spread over a video."""
    from edge_seg.io import readers
    frames, bad = [], 0
    stride = 1
    if kind == "video" and getattr(reader, "frame_count", 0) > n:
        stride = reader.frame_count // n
    deadline = time.monotonic() + 30.0
    if reader.live:  # let the camera settle its exposure
        for _ in range(5):
            try:
                reader.read()
            except (ConnectionError, EOFError):
                break
    while len(frames) < n:
        try:
            image = readers.valid_frame(reader.read())
        except EOFError:
            break
        except ConnectionError as e:
            raise UserError(f"--frames {spec}: {e}") from None
        if image is None:
            bad += 1
            if bad > 25 or time.monotonic() > deadline:
                break
            continue
        frames.append(image.copy())
        for _ in range(stride - 1):
            try:
                reader.skip()
            except EOFError:
                break
    return frames


def load_frames(spec: str | None, n: int, root=None) -> tuple[list, str]:
    """(BGR frames, description) from a calibration manifest (.json), a folder or glob of
    images, an image, a video, a camera index or 'demo' (the synthetic street scenes)."""
    from edge_seg.io import readers, sources
    spec = (spec or readers.DEMO).strip()
    if n < 1:
        raise UserError(f"--n-frames {n}: must be at least 1")
    if spec.lower() == readers.DEMO:
        render_scene = readers.demo_renderer().render_scene
        width, height = readers.DEMO_SIZE
        frames = [render_scene(seed, (width, height)).image for seed in range(n)]
        return frames, f"{n} synthetic street scenes ({width}x{height})"
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".json":
        if not path.is_file():
            raise UserError(f"--frames {spec}: no such manifest")
        return _manifest_frames(path, n, root)[:2]
    kind = sources.kind_of(spec)
    if kind == "images":
        paths = sources._image_paths(spec) or []
        if not paths:
            raise UserError(f"--frames {spec}: no images found")
        reader = readers.ImagesReader(_spread(paths, n), f"images from {spec}")
    else:
        reader = sources.open_reader(spec)  # a camera that can't be opened: one-line UserError
    try:
        frames = _read_source(spec, kind, reader, n)
    finally:
        reader.close()
    if not frames:
        raise UserError(f"--frames {spec}: no readable frame")
    return frames, f"{len(frames)} frames of {reader.description}"


def load_labelled_frames(spec: str | None, n: int, root=None) -> tuple[list, list, str]:
    """(BGR frames, ground-truth category masks, description) from a calibration manifest."""
    path = Path(spec or "").expanduser()
    if path.suffix.lower() != ".json" or not path.is_file():
        raise UserError(f"--drop-vs labels needs --frames MANIFEST.json (a calibration manifest "
                        f"with masks, from 'edge-seg calibrate'), not {spec!r}")
    frames, text, gts = _manifest_frames(path, n, root, with_labels=True)
    return frames, gts, text
