"""Collected frames out to CVAT / Label Studio and back (`edge-seg data export` / `import`).

The collection is built by hand from the folder contract; the labeller is simulated by
writing the tool's export directly (colour PNGs into a Segmentation mask 1.1 zip, brush RLE
into a Label Studio JSON export)."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import edge_seg
from edge_seg import labels
from edge_seg.errors import UserError
from edge_seg.train import labeling

SIZE = (24, 40)  # height, width
STEMS = ("20261206T070000Z-0000003", "20261206T070001Z-0000017", "20261206T070002Z-0000042")


def prelabel(seed: int) -> np.ndarray:
    """Blocks of every category, different per frame."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, labels.NUM_CATEGORIES, (SIZE[0] // 4, SIZE[1] // 4))
    return np.kron(blocks, np.ones((4, 4), np.int64)).astype(np.uint8)


def make_collection(root: Path) -> dict[str, np.ndarray]:
    (root / "meta").mkdir(parents=True)
    (root / "images").mkdir()
    (root / "masks").mkdir()
    (root / "mapping.json").write_text(json.dumps(labeling.mapping_json()))
    masks = {}
    for i, stem in enumerate(STEMS):
        image = np.random.default_rng(i).integers(0, 255, SIZE + (3,), np.uint8)
        cv2.imwrite(str(root / "images" / f"{stem}.png"), image)
        masks[stem] = prelabel(i)
        cv2.imwrite(str(root / "masks" / f"{stem}.png"), masks[stem])
        (root / "meta" / f"{stem}.json").write_text(json.dumps({
            "stem": stem, "time": "2026-12-06T07:00:00Z", "source": "clip.mp4", "frame_index": i,
            "source_name": None, "model": "m.tflite", "model_sha256": "0" * 64,
            "reason": ["margin", "disagreement", "rare:human"][i], "score": 0.5 + i,
            "scores": {"margin": 0.1}, "labelled": False}))
    return masks


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture
def collection(tmp_path):
    masks = make_collection(tmp_path / "col")
    return tmp_path / "col", masks


def read_back(out: Path) -> dict[str, np.ndarray]:
    return {p.stem: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted((out / "masks").glob("*.png"))}


# -- the RLE, against a reference decoder written from the format's description -------------

def reference_decode(data: list[int]) -> list[int]:
    bits = "".join(f"{b:08b}" for b in data)
    pos = 0

    def take(n):
        nonlocal pos
        pos += n
        return int(bits[pos - n:pos], 2)

    num, word = take(32), take(5) + 1
    sizes = [take(4) + 1 for _ in range(4)]
    out = []
    while len(out) < num:
        repeat = take(1)
        n = 1 + take(sizes[take(2)])
        out += [take(word)] * n if repeat else [take(word) for _ in range(n)]
    return out


@pytest.mark.parametrize("values", [
    [7], [5, 5, 5], [0, 1, 2, 3], [9] * 16 + [3] * 17 + [4] * 256 + [8] * 257,
    [255] * 70000 + [0] * 3 + [1],
])
def test_rle_encodes_what_the_reference_decodes(values):
    encoded = labeling.encode_rle(np.array(values, np.uint8))
    assert reference_decode(encoded) == values
    assert labeling.decode_rle(encoded).tolist() == values


def test_rle_header_and_a_run_by_hand():
    # 3 values of 5: count 3 (32 bits), word size 8 (00111), widths 3,4,8,16, then one run
    # token: 1 (run), 00 (3-bit length), 010 (3 = 2+1), 00000101 (5); padded to bytes
    bits = f"{3:032b}00111" "0010001101111111" "100010" "00000101"
    bits += "0" * (-len(bits) % 8)
    assert labeling.encode_rle(np.array([5, 5, 5], np.uint8)) == [int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)]


def test_rle_decodes_literal_groups_of_several_values():
    # the front end writes groups of distinct values: 0 (literal), 00, 011 (4 values), 4 words
    bits = f"{4:032b}00111" "0010001101111111" "000011" + "".join(f"{v:08b}" for v in (1, 2, 3, 4))
    bits += "0" * (-len(bits) % 8)
    assert labeling.decode_rle([int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)]).tolist() == [1, 2, 3, 4]


def test_mask_round_trips_through_brush_regions():
    mask = prelabel(5)
    mask[:3] = labels.IGNORE
    result = labeling.labelstudio_result(mask)
    back = np.full(SIZE, labels.IGNORE, np.uint8)
    for item in result:
        code, layer = labeling._brush_layer(item, "t")
        back[layer] = code
    np.testing.assert_array_equal(back, mask)


# -- CVAT ------------------------------------------------------------------------------------

def cvat_export(zip_in: Path, zip_out: Path, edit=None) -> None:
    """What CVAT hands back: the same layout, possibly with a labeller's colour PNG."""
    with zipfile.ZipFile(zip_in) as src, zipfile.ZipFile(zip_out, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if edit and name == f"SegmentationClass/{edit[0]}.png":
                ok, png = cv2.imencode(".png", edit[1][..., ::-1])
                data = png.tobytes()
            dst.writestr(name, data)


def test_cvat_export_then_import_without_edits_gives_the_prelabels(collection, tmp_path):
    root, masks = collection
    before = snapshot(root)
    # the round trip needs no TensorFlow: it is blocked in these two runs
    done = edge_seg("data", "export", str(root), "--format", "cvat", "-o", str(tmp_path / "out"), block_tf=True)
    assert done.returncode == 0, done.stderr
    assert "Segmentation mask 1.1" in done.stdout and "Upload annotations" in done.stdout
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{s}.png" for s in STEMS]
    with zipfile.ZipFile(out / "cvat-annotations.zip") as z:
        names = set(z.namelist())
        assert z.read("ImageSets/Segmentation/default.txt").decode().split() == list(STEMS)
        labelmap = z.read("labelmap.txt").decode()
    assert {f"SegmentationClass/{s}.png" for s in STEMS} <= names
    assert {f"SegmentationObject/{s}.png" for s in STEMS} <= names
    assert "background:0,0,0::" in labelmap and "vehicle:0,0,142::" in labelmap
    done = edge_seg("data", "import", str(root), str(out / "cvat-annotations.zip"), "-o",
                    str(tmp_path / "lab"), "--format", "cvat", block_tf=True)
    assert done.returncode == 0, done.stderr
    back = read_back(tmp_path / "lab")
    assert list(back) == list(STEMS)
    for stem in STEMS:
        np.testing.assert_array_equal(back[stem], masks[stem])
        meta = json.loads((tmp_path / "lab" / "meta" / f"{stem}.json").read_text())
        assert meta["labelled"] is True and meta["stem"] == stem
        assert (tmp_path / "lab" / "images" / f"{stem}.png").read_bytes() == before[Path("images", f"{stem}.png")]
    assert snapshot(root) == before
    check = edge_seg("data", "check", str(tmp_path / "lab"))
    assert "collection: 3 frames, 3 labelled, 0 not" in check.stdout, check.stdout


def test_cvat_instances_use_the_voc_palette_one_per_category():
    # Pascal VOC's colour map, first entries as the VOC devkit lists them
    assert labeling._voc_palette(9).tolist()[:4] == [[0, 0, 0], [128, 0, 0], [0, 128, 0], [128, 128, 0]]
    assert labeling._voc_palette(9).tolist()[8] == [64, 0, 0]
    mask = prelabel(2)
    objects = labeling._instances(mask, labels.VOID)
    assert len(np.unique(objects.reshape(-1, 3), axis=0)) == len(np.unique(mask))
    assert (objects[mask == labels.VOID] == 0).all()


def test_cvat_edited_mask_and_ignore_come_back(collection, tmp_path):
    root, masks = collection
    labeling.export_collection(root, tmp_path / "out", "cvat")
    edited = masks[STEMS[1]].copy()
    edited[:8, :8] = labels.CATEGORY_IDS["human"]
    edited[8:12] = labels.IGNORE  # painted with CVAT's 'ignore' label
    colours = {code: colour for _, colour, code in labeling.cvat_labels()}
    cvat_export(tmp_path / "out" / "cvat-annotations.zip", tmp_path / "back.zip",
                (STEMS[1], labeling.paint(edited, colours)))
    assert (labeling.paint(edited, colours)[8, 0] == (255, 255, 255)).all()
    labeling.import_annotations(root, tmp_path / "back.zip", tmp_path / "lab", "cvat")
    back = read_back(tmp_path / "lab")
    np.testing.assert_array_equal(back[STEMS[1]], edited)
    np.testing.assert_array_equal(back[STEMS[0]], masks[STEMS[0]])


def test_cvat_only_frames_with_a_mask_come_back(collection, tmp_path):
    root, masks = collection
    labeling.write_cvat_annotations({STEMS[2]: masks[STEMS[2]]}, tmp_path / "one.zip")
    assert labeling.import_annotations(root, tmp_path / "one.zip", tmp_path / "lab", "cvat") == 1
    assert list(read_back(tmp_path / "lab")) == [STEMS[2]]


def test_cvat_unknown_colour_is_one_line_naming_file_and_colour(collection, tmp_path):
    root, masks = collection
    labeling.export_collection(root, tmp_path / "out", "cvat")
    colours = {code: colour for _, colour, code in labeling.cvat_labels()}
    rgb = labeling.paint(masks[STEMS[0]], colours)
    rgb[5, 5] = (1, 2, 3)
    cvat_export(tmp_path / "out" / "cvat-annotations.zip", tmp_path / "bad.zip", (STEMS[0], rgb))
    before = snapshot(root)
    done = edge_seg("data", "import", str(root), str(tmp_path / "bad.zip"), "-o", str(tmp_path / "lab"),
                    "--format", "cvat")
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in done.stderr
    assert f"SegmentationClass/{STEMS[0]}.png" in errors[0] and "(1, 2, 3)" in errors[0]
    assert not (tmp_path / "lab").exists()
    assert snapshot(root) == before


def test_cvat_labelmap_with_an_unknown_label_is_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        z.writestr("labelmap.txt", "background:0,0,0::\ntruck:1,2,3::\n")
    with pytest.raises(UserError, match="'truck'"):
        labeling.read_cvat_annotations(tmp_path / "a.zip")


def test_cvat_export_from_a_subfolder_and_a_void_label_are_read(tmp_path):
    mask = prelabel(1)
    rgb = labeling.paint(mask, {c.id: c.color for c in labels.CATEGORIES})
    ok, png = cv2.imencode(".png", rgb[..., ::-1])
    with zipfile.ZipFile(tmp_path / "a.zip", "w") as z:
        z.writestr("task/labelmap.txt", "# label:color_rgb:parts:actions\nbackground:0,0,0::\n"
                   + "".join(f"{c.name}:{','.join(map(str, c.color))}::\n" for c in labels.CATEGORIES))
        z.writestr("task/SegmentationClass/x.png", png.tobytes())
    np.testing.assert_array_equal(labeling.read_cvat_annotations(tmp_path / "a.zip")["x"], mask)


# -- Label Studio ----------------------------------------------------------------------------

def ls_export(tasks_json: Path, out: Path, edits: dict | None = None, skip=()) -> None:
    """Label Studio's JSON export: each task's predictions accepted as its annotation,
    ``edits`` replacing a task's result, ``skip`` tasks left unannotated."""
    tasks = json.loads(tasks_json.read_text())
    exported = []
    for n, task in enumerate(tasks):
        stem = task["data"]["stem"]
        result = (edits or {}).get(stem, task["predictions"][0]["result"])
        exported.append({"id": n + 1, "data": {**task["data"], "image": f"/data/upload/1/0a1b2c3d-{stem}.png"},
                         "annotations": [] if stem in skip else
                         [{"id": 1, "result": [], "was_cancelled": True},
                          {"id": 2, "result": result, "was_cancelled": False}]})
    out.write_text(json.dumps(exported))


def test_labelstudio_export_then_import_without_edits_gives_the_prelabels(collection, tmp_path):
    root, masks = collection
    before = snapshot(root)
    done = edge_seg("data", "export", str(root), "--format", "labelstudio", "-o", str(tmp_path / "ls"))
    assert done.returncode == 0, done.stderr
    config = (tmp_path / "ls" / "labeling-config.xml").read_text()
    assert all(f'<Label value="{name}"' in config for name in labels.CATEGORY_NAMES)
    tasks = json.loads((tmp_path / "ls" / "tasks.json").read_text())
    assert [t["data"]["image"] for t in tasks] == [f"/data/local-files/?d=ls/images/{s}.png" for s in STEMS]
    assert {r["type"] for t in tasks for r in t["predictions"][0]["result"]} == {"brushlabels"}
    ls_export(tmp_path / "ls" / "tasks.json", tmp_path / "export.json", skip={STEMS[0]})
    done = edge_seg("data", "import", str(root), str(tmp_path / "export.json"), "-o", str(tmp_path / "lab"),
                    "--format", "labelstudio")
    assert done.returncode == 0, done.stderr
    back = read_back(tmp_path / "lab")
    assert list(back) == list(STEMS[1:])
    for stem in STEMS[1:]:
        np.testing.assert_array_equal(back[stem], masks[stem])
    assert snapshot(root) == before


def test_labelstudio_erased_pixels_are_ignore_and_edits_come_back(collection, tmp_path):
    root, masks = collection
    labeling.export_collection(root, tmp_path / "ls", "labelstudio")
    edited = masks[STEMS[0]].copy()
    edited[:, :6] = labels.CATEGORY_IDS["vehicle"]
    edited[10:14] = labels.IGNORE  # erased: no brush there
    ls_export(tmp_path / "ls" / "tasks.json", tmp_path / "export.json",
              {STEMS[0]: labeling.labelstudio_result(edited)})
    labeling.import_annotations(root, tmp_path / "export.json", tmp_path / "lab", "labelstudio")
    back = read_back(tmp_path / "lab")
    np.testing.assert_array_equal(back[STEMS[0]], edited)
    assert (back[STEMS[0]][10:14] == labels.IGNORE).all()


def test_labelstudio_unknown_label_is_one_line(collection, tmp_path):
    root, masks = collection
    labeling.export_collection(root, tmp_path / "ls", "labelstudio")
    result = labeling.labelstudio_result(masks[STEMS[0]])
    result[0]["value"]["brushlabels"] = ["Airplane"]
    ls_export(tmp_path / "ls" / "tasks.json", tmp_path / "export.json", {STEMS[0]: result})
    with pytest.raises(UserError, match=f"task {STEMS[0]}.*Airplane"):
        labeling.import_annotations(root, tmp_path / "export.json", tmp_path / "lab", "labelstudio")


def test_labelstudio_task_found_by_its_uploaded_file_name():
    stem = STEMS[0]
    assert labeling._task_stem({"data": {"image": f"/data/upload/3/0a1b2c3d-{stem}.png"}}, "t") == stem
    assert labeling._task_stem({"data": {"image": f"/data/local-files/?d=ls/images/{stem}.png"}}, "t") == stem
    with pytest.raises(UserError, match="task 4: a task without"):
        labeling._task_stem({"data": {}}, "task 4")


@pytest.mark.parametrize("rle", [None, [], [1, 2, 300, 4, 5, 6, 7], "abc", [0, 0, 1, 0] + [0] * 3])
def test_a_broken_rle_is_one_line(rle):
    with pytest.raises(UserError, match="region 1"):
        labeling.decode_rle(rle, "region 1")


def test_a_region_announcing_another_size_is_refused_before_decoding():
    item = labeling.labelstudio_result(np.zeros((4, 4), np.uint8))[0]
    item["original_width"] = 5
    with pytest.raises(UserError, match="holds 64 values, not the 80"):
        labeling._brush_layer(item, "task x")
    item["original_width"] = 1 << 20
    item["original_height"] = 1 << 20
    with pytest.raises(UserError, match="sensible original_width"):
        labeling._brush_layer(item, "task x")


# -- hostile input ---------------------------------------------------------------------------

def test_an_annotation_for_a_frame_not_in_the_collection_is_refused(collection, tmp_path):
    root, masks = collection
    labeling.write_cvat_annotations({"20200101T000000Z-0000001": masks[STEMS[0]]}, tmp_path / "a.zip")
    with pytest.raises(UserError, match="20200101T000000Z-0000001"):
        labeling.import_annotations(root, tmp_path / "a.zip", tmp_path / "lab", "cvat")


def test_a_mask_of_another_size_is_refused(collection, tmp_path):
    root, masks = collection
    labeling.write_cvat_annotations({STEMS[0]: masks[STEMS[0]][:8]}, tmp_path / "a.zip")
    with pytest.raises(UserError, match=f"{STEMS[0]} is 40x8"):
        labeling.import_annotations(root, tmp_path / "a.zip", tmp_path / "lab", "cvat")
    assert not (tmp_path / "lab").exists()


def test_output_inside_the_collection_is_refused(collection):
    root, _ = collection
    with pytest.raises(UserError, match="inside the input folder"):
        labeling.export_collection(root, root / "out", "cvat")


def test_check_reports_a_collection(collection):
    root, _ = collection
    done = edge_seg("data", "check", str(root))
    assert "collection: 3 frames, 0 labelled, 3 not; kept for: disagreement 1, margin 1, rare:human 1" \
        in done.stdout, done.stdout + done.stderr
