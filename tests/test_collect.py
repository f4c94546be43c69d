"""`edge-seg run --collect`: the folder contract, the caps, the rate limit, atomic writes, a
write failure, continuing a collection, and `edge-seg data check` reading the result.

Scores are injected (a candidate carries its own) so the kept set is exact; the rate limit
counts source frames, never time; margins are checked against a sort done here."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from conftest import edge_seg
from edge_seg import labels
from edge_seg.errors import EXIT_USAGE, OutputError
from edge_seg.run import collect as collect_mod
from edge_seg.run.collect import Candidate, Collector, margin_signals
from edge_seg.run.command import RunOptions, run_pipeline

META_KEYS = {"stem", "time", "capture_s", "source", "frame_index", "source_name", "model", "model_sha256",
             "reason", "score", "scores", "labelled"}
STEM = re.compile(r"\d{8}T\d{6}Z-\d{7}")


def collector(root: Path, **kw) -> Collector:
    kw.setdefault("source_spec", "demo")
    kw.setdefault("model_path", "m.tflite")
    kw.setdefault("model_sha256", "0" * 64)
    return Collector(root, **kw)


def candidate(stem: str, score: float, seed: int = 0, size=(24, 32), at: float | None = None) -> Candidate:
    """A frame captured at second ``at`` (default: ``seed``) of the collection's time."""
    rng = np.random.default_rng(seed)  # noise: PNG cannot shrink it, so sizes are predictable
    image = rng.integers(0, 256, (*size, 3), np.uint8)
    mask = rng.integers(0, labels.NUM_CATEGORIES, size, np.uint8)
    meta = {"stem": stem, "score": score, "reason": "margin", "scores": {}, "labelled": False,
            "capture_s": float(seed if at is None else at)}
    return Candidate(image, mask, meta)


def stems(root: Path) -> set[str]:
    return {p.stem for p in (root / "meta").glob("*.json")}


def complete(root: Path) -> None:
    """Every published frame has its image, mask and JSON; nothing temporary is left."""
    names = {part: {p.stem for p in (root / part).iterdir()} for part in ("images", "masks", "meta")}
    assert names["images"] == names["masks"] == names["meta"]
    assert not [p for p in root.rglob(".*")]


def stem(i: int) -> str:
    return f"20261206T070000Z-{i:07d}"


# -- caps -----------------------------------------------------------------------------
def test_a_count_cap_keeps_the_most_useful_frame_of_each_stretch_of_time(tmp_path, monkeypatch):
    c = collector(tmp_path / "c", max_frames=3)
    for i, score in enumerate([0.3, 0.3, 0.9]):
        assert c.write(candidate(stem(i), score, i))
    # one second apart: every pair is nearest, the least useful of their losers goes (ties: older)
    assert c.write(candidate(stem(3), 0.5, 3))
    assert stems(tmp_path / "c") == {stem(1), stem(2), stem(3)}
    assert c.write(candidate(stem(4), 0.4, 4))
    assert stems(tmp_path / "c") == {stem(2), stem(3), stem(4)}
    # 2-3 and 3-4 are nearest (1 s; 4 -> 12 is 8 s): the 0.4 goes, not the 0.1 far away
    assert c.write(candidate(stem(12), 0.1, 12))
    assert stems(tmp_path / "c") == {stem(2), stem(3), stem(12)}
    encoded, encode = [], collect_mod.encode_png
    monkeypatch.setattr(collect_mod, "encode_png", lambda image: encoded.append(1) or encode(image))
    assert not c.write(candidate(stem(13), 0.05, 13, at=12.5)), "nearest to 12 and less useful: not kept"
    assert encoded == [], "refused before its PNGs were encoded"
    assert c.write(candidate(stem(14), 0.95, 14, at=12.5)), "nearest to 12 and more useful: 12 goes"
    assert stems(tmp_path / "c") == {stem(2), stem(3), stem(14)}
    assert c.summary()["removed"] == 4 and c.summary()["kept"] == 3
    complete(tmp_path / "c")


def test_a_long_stream_ends_spread_and_each_kept_frame_is_the_best_of_its_stretch(tmp_path):
    """100 frames, one per second, at most 10 kept: the kept frames cover the stream, and each
    is the most useful frame between its neighbours' midpoints. Kept for usefulness alone, the
    ten would all come from the stream's most uncertain minute (frames 40-59 here)."""
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.0, 0.5, 100)
    scores[40:60] += 1.0
    c = collector(tmp_path / "c", max_frames=10)
    for i, score in enumerate(scores):
        c.write(candidate(stem(i), float(score), i, size=(4, 4)))
    kept = sorted(int(s[-7:]) for s in stems(tmp_path / "c"))
    assert len(kept) == 10
    gaps = np.diff([0, *kept, 99])
    assert gaps.max() <= 2 * 100 / 10, f"spread over the stream: {kept}"
    assert sum(40 <= k < 60 for k in kept) <= 4
    bounds = [0, *[(a + b) // 2 + 1 for a, b in zip(kept, kept[1:])], 100]
    best = [lo + int(np.argmax(scores[lo:hi])) for lo, hi in zip(bounds, bounds[1:])]
    assert sum(k == b for k, b in zip(kept, best)) >= 8, (kept, best)


def test_a_frame_is_removed_json_first(tmp_path, monkeypatch):
    c = collector(tmp_path / "c", max_frames=1)
    c.write(candidate(stem(0), 0.1, 0))
    removed, unlink = [], Path.unlink
    monkeypatch.setattr(Path, "unlink", lambda p, **kw: removed.append(
        (p.parent.name, p.name, p.exists())) or unlink(p, **kw))
    assert c.write(candidate(stem(1), 0.2, 1))
    assert removed[:3] == [("meta", f"{stem(0)}.json", True), ("images", f"{stem(0)}.png", True),
                           ("masks", f"{stem(0)}.png", True)]


def test_a_byte_cap_holds_and_removes_as_many_as_needed(tmp_path):
    root = tmp_path / "c"
    probe = collector(tmp_path / "probe", max_frames=10)
    probe.write(candidate(stem(0), 0.1, 0))
    one = probe.summary()["bytes"]
    assert one == sum(p.stat().st_size for p in (tmp_path / "probe").rglob("*.*")
                      if p.name != "mapping.json")
    c = collector(root, max_frames=10, max_bytes=int(2.5 * one))
    assert c.write(candidate(stem(1), 0.2, 1)) and c.write(candidate(stem(2), 0.1, 2))
    assert not c.write(candidate(stem(3), 0.05, 3))
    big = candidate(stem(4), 0.9, 4, size=(48, 32))  # twice the pixels: both must go
    assert c.write(big)
    assert stems(root) == {stem(4)}
    on_disk = sum(p.stat().st_size for p in root.rglob("*.*") if p.name != "mapping.json")
    assert on_disk == c.summary()["bytes"] <= int(2.5 * one)
    assert not c.write(candidate(stem(5), 5.0, 5, size=(96, 64))), "larger than the cap alone"
    complete(root)


# -- the render thread's side: rate limit and signals --------------------------------
def frame(index: int, shape=(24, 32)):
    return SimpleNamespace(index=index, image=np.zeros((*shape, 3), np.uint8))


def test_at_most_one_frame_per_interval_of_source_time(tmp_path):
    c = collector(tmp_path / "c", every_s=1.0, source_fps=10.0)
    logits = np.zeros((1, 4, 4, labels.NUM_CATEGORIES), np.int8)
    mask = np.zeros((24, 32), np.uint8)
    taken = []
    c._enqueue = lambda candidate: taken.append(candidate.meta["frame_index"]) or True
    for i in range(35):
        c.offer(frame(i), logits, mask[:4, :4], mask)
    assert taken == [0, 10, 20, 30] and c.considered == 4


def test_a_full_writer_queue_drops_and_counts_never_waits(tmp_path):
    c = collector(tmp_path / "c", every_s=0.0)  # writer never started: the queue fills
    logits = np.zeros((1, 4, 4, labels.NUM_CATEGORIES), np.float32)
    mask = np.zeros((24, 32), np.uint8)
    results = [c.offer(frame(i), logits, mask[:4, :4], mask) for i in range(5)]
    assert results == [True] * collect_mod.QUEUE_SIZE + [False] * (5 - collect_mod.QUEUE_SIZE)
    assert c.summary()["dropped_full_queue"] == 5 - collect_mod.QUEUE_SIZE


def test_margins_match_a_sort_in_the_quantised_domain():
    rng = np.random.default_rng(3)
    logits = rng.integers(-128, 128, (1, 6, 5, labels.NUM_CATEGORIES)).astype(np.int8)
    s = np.sort(logits[0].astype(np.int64), axis=-1)
    margin = s[..., -1] - s[..., -2]
    got = margin_signals(logits, threshold=20)
    assert got["margin_mean"] == pytest.approx(margin.mean())
    assert got["low_margin_share"] == pytest.approx((margin < 20).mean())


def test_a_category_seen_on_few_frames_is_rare(tmp_path):
    c = collector(tmp_path / "c")
    road = np.full((10, 10), labels.CATEGORY_IDS["flat"], np.uint8)
    for _ in range(collect_mod.RARE_MIN_FRAMES + 5):
        c.considered += 1
        assert c._rare(road)["rare"] == 0.0
    people = road.copy()
    people[:3] = labels.CATEGORY_IDS["human"]
    c.considered += 1
    got = c._rare(people)
    assert got["rare_category"] == "human" and got["rare"] == pytest.approx(1 - 1 / c.considered)


# -- the folder on disk --------------------------------------------------------------
def test_continuing_counts_earlier_frames_and_clears_a_half_written_one(tmp_path):
    root = tmp_path / "c"
    c = collector(root, max_frames=2)
    c.write(candidate(stem(0), 0.5, 0))
    c.write(candidate(stem(1), 0.7, 1))
    # a kill between the mask and the JSON leaves a frame that never counted
    for part in ("images", "masks"):
        (root / part / f"{stem(2)}.png").write_bytes(b"half")
    again = collector(root, max_frames=2)
    assert again.summary()["kept"] == 2
    assert not (root / "images" / f"{stem(2)}.png").exists()
    assert not again.write(candidate(stem(3), 0.4, 3, at=1.2)), "nearest to the 0.7, less useful"
    assert again.write(candidate(stem(4), 0.6, 4))
    assert stems(root) == {stem(1), stem(4)}
    complete(root)


def test_a_write_failure_warns_once_and_leaves_a_complete_collection(tmp_path, monkeypatch):
    root = tmp_path / "c"
    lines = []
    c = collector(root, every_s=0.0, log=lines.append)
    real = collect_mod.atomic_write_bytes
    calls = {"n": 0}

    def failing(path, data, option=None):
        calls["n"] += 1
        if calls["n"] == 5:  # the second frame's mask
            raise OutputError(f"--collect {path}: cannot write (no space left on the device)")
        real(path, data, option)

    monkeypatch.setattr(collect_mod, "atomic_write_bytes", failing)
    logits = np.zeros((1, 4, 4, labels.NUM_CATEGORIES), np.float32)
    mask = np.zeros((24, 32), np.uint8)
    assert all(c.offer(frame(i), logits, mask[:4, :4], mask) for i in range(2))
    c.start().close()  # the writer takes both, in order
    assert len(stems(root)) == 1 and c.error and "no space left" in c.error
    assert not c.offer(frame(2), logits, mask[:4, :4], mask), "collection stopped"
    assert [str(x) for x in lines if "collection stopped" in x] and len(lines) == 1
    complete(root)


def test_the_collect_folder_must_be_a_folder(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(Exception, match="not a folder"):
        collector(tmp_path / "f")


# -- through `edge-seg run` ------------------------------------------------------------
@pytest.fixture
def roomy_queue(monkeypatch):
    """A writer slower than the loop drops frames (tested above with the real queue); runs
    that assert the exact kept set get room for every considered frame, however busy the
    machine."""
    monkeypatch.setattr(collect_mod, "QUEUE_SIZE", 64)


def run_opts(tiny_models, source, root, **kw) -> RunOptions:
    return RunOptions(source=str(source), model=str(tiny_models["int8"]), show=False, threads=1,
                      quiet=True, collect=str(root), **kw)


def test_a_run_writes_the_contract_and_data_check_accepts_it(tiny_models, roomy_queue, tmp_path):
    root = tmp_path / "c"
    # the demo clip runs at 30 fps: frames 0, 15 and 30 are half a second apart
    summary = run_pipeline(run_opts(tiny_models, "demo", root, max_frames=40, collect_every=0.5))
    collected = summary["collected"]
    assert {k: collected[k] for k in ("kept", "considered", "dropped_full_queue", "removed")} == {
        "kept": 3, "considered": 3, "dropped_full_queue": 0, "removed": 0}
    assert json.loads((root / "mapping.json").read_text()) == {
        **{str(c.id): c.name for c in labels.CATEGORIES}, "255": "ignore"}
    metas = [json.loads(p.read_text()) for p in sorted((root / "meta").glob("*.json"))]
    assert [m["frame_index"] for m in metas] == [0, 15, 30]
    for m in metas:
        assert set(m) == META_KEYS and STEM.fullmatch(m["stem"]) and m["labelled"] is False
        assert m["source"] == "demo" and m["source_name"] is None
        assert m["model"] == tiny_models["int8"].name
        assert m["model_sha256"] == json.loads(tiny_models["int8"].with_suffix(".json").read_text())["model_sha256"]
        image = cv2.imread(str(root / "images" / f"{m['stem']}.png"), cv2.IMREAD_UNCHANGED)
        mask = cv2.imread(str(root / "masks" / f"{m['stem']}.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == image.shape[:2] and mask.max() < labels.NUM_CATEGORIES
        assert m["score"] == pytest.approx(sum(v for k, v in m["scores"].items()
                                               if k in ("low_margin_share", "disagreement", "rare")))
    assert collected["bytes"] == sum(p.stat().st_size for p in root.rglob("*.*")
                                     if p.name != "mapping.json")
    complete(root)
    check = edge_seg("data", "check", str(root))
    assert check.returncode == 0, check.stdout + check.stderr
    assert "images without masks: 0, masks without images: 0" in check.stdout
    assert "collection: 3 frames, 0 labelled, 3 not" in check.stdout
    from edge_seg.train.labeling import read_collection  # what data export reads
    assert [f.meta for f in read_collection(root)] == metas


def test_a_second_run_continues_within_the_cap(tiny_models, roomy_queue, tmp_path):
    root = tmp_path / "c"
    run_pipeline(run_opts(tiny_models, "demo", root, max_frames=40, collect_every=0.5))
    first = sorted(json.loads(p.read_text())["score"] for p in (root / "meta").glob("*.json"))
    summary = run_pipeline(run_opts(tiny_models, "demo", root, max_frames=40, collect_every=0.5,
                                    collect_max=4))
    c = summary["collected"]
    assert c["kept"] == len(stems(root)) == 4 and c["considered"] == 3
    assert c["kept_this_run"] - c["removed"] == 1
    # the same clip and model score the same three frames again: four of the six stay
    kept = sorted(json.loads(p.read_text())["score"] for p in (root / "meta").glob("*.json"))
    assert all(any(k == pytest.approx(f) for f in first) for k in kept)
    complete(root)


def test_a_file_places_its_frames_at_their_position_and_a_live_source_at_its_clock(tmp_path):
    logits = np.zeros((1, 4, 4, labels.NUM_CATEGORIES), np.int8)
    mask = np.zeros((24, 32), np.uint8)
    for wait, expected in ((True, [1000.0 + 0.0, 1000.0 + 2.0]), (False, [1000.1, 1000.2])):
        clock = iter([1000.0, 1000.1, 1000.2]) if not wait else iter([1000.0, 1000.1, 1000.1])
        c = collector(tmp_path / f"c{wait}", every_s=1.0, source_fps=10.0, wait=wait,
                      clock=lambda: next(clock))
        placed = []
        c._enqueue = lambda candidate: placed.append(candidate.meta["capture_s"]) or True
        for i in (0, 20):
            c.offer(frame(i), logits, mask[:4, :4], mask)
        assert placed == pytest.approx(expected)


def test_an_image_folder_names_each_frame(tiny_models, roomy_queue, tmp_path):
    from conftest import street_frames
    (tmp_path / "frames").mkdir()
    for i, image in enumerate(street_frames(3, size=(160, 80))):
        cv2.imwrite(str(tmp_path / "frames" / f"shot{i}.png"), image)
    root = tmp_path / "c"
    run_pipeline(run_opts(tiny_models, tmp_path / "frames", root))
    names = sorted(json.loads(p.read_text())["source_name"] for p in (root / "meta").glob("*.json"))
    assert names == ["shot0.png", "shot1.png", "shot2.png"]
    kept = sorted((root / "images").glob("*.png"))
    assert np.array_equal(cv2.imread(str(kept[0])), cv2.imread(str(tmp_path / "frames" / "shot0.png")))


def test_with_a_drift_check_its_verdict_on_the_same_frame_is_scored(tiny_models, roomy_queue, tmp_path):
    from edge_seg.iou import agreement
    from edge_seg.segmenter import Segmenter
    root = tmp_path / "c"
    summary = run_pipeline(run_opts(tiny_models, "demo", root, max_frames=40, collect_every=0.5,
                                    check_float=str(tiny_models["other"]), check_every=4))
    metas = [json.loads(p.read_text()) for p in sorted((root / "meta").glob("*.json"))]
    assert metas and summary["agreement"]["checks"] >= len(metas)
    quantised, reference = Segmenter(tiny_models["int8"], threads=1), Segmenter(tiny_models["other"], threads=1)
    for m in metas:
        assert m["frame_index"] % 4 == 0, "only frames the drift check took"
        image = cv2.imread(str(root / "images" / f"{m['stem']}.png"))
        expected = 1 - agreement(reference.predict_mask(image)[0], quantised.predict_mask(image)[0])["miou7"]
        assert m["scores"]["disagreement"] == pytest.approx(expected, abs=1e-6)
        terms = {"margin": m["scores"]["low_margin_share"], "disagreement": expected}
        assert m["reason"] == max(terms, key=terms.get)
        assert m["score"] == pytest.approx(sum(terms.values()) + m["scores"]["rare"])


def test_the_score_and_reason_are_the_sum_and_the_largest_term():
    from edge_seg.run.collect import finish_scores
    assert finish_scores({"low_margin_share": 0.2, "disagreement": 0.5, "rare": 0.3,
                          "rare_category": "human"}) == (pytest.approx(1.0), "disagreement")
    assert finish_scores({"low_margin_share": 0.2, "rare": 0.9, "rare_category": "human"}) == (
        pytest.approx(1.1), "rare:human")


def test_json_logs_carry_kept_and_removed_and_the_summary_the_counts(tiny_models, roomy_queue, tmp_path, capsys):
    from edge_seg import log as logs
    logs.configure("info", "json")
    try:
        run_pipeline(run_opts(tiny_models, "demo", tmp_path / "c", max_frames=40,
                              collect_every=0.25, collect_max=2))
    finally:
        logs.configure()
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    events = [r["event"] for r in records]
    summary = records[-1]["collected"]
    assert records[-1]["event"] == "run.summary" and summary["considered"] == 5
    assert events.count("collect.kept") == summary["kept_this_run"] >= 2
    assert events.count("collect.removed") == summary["removed"] == summary["kept_this_run"] - 2
    kept = {r["stem"] for r in records if r["event"] == "collect.kept"}
    gone = {r["stem"] for r in records if r["event"] == "collect.removed"}
    assert kept - gone == stems(tmp_path / "c")


def test_a_run_whose_collection_fails_goes_on_and_says_so(tiny_models, tmp_path, monkeypatch, capsys):
    def full(path, data, option=None):
        raise OutputError(f"--collect {path}: cannot write (no space left on the device)")

    monkeypatch.setattr(collect_mod, "atomic_write_bytes", full)
    summary = run_pipeline(run_opts(tiny_models, "demo", tmp_path / "c", max_frames=40,
                                    collect_every=0.25, report=str(tmp_path / "r.json")))
    assert summary["frames"] == 40 and summary["error"] is None
    assert "no space left" in summary["collected"]["error"] and summary["collected"]["kept"] == 0
    out = capsys.readouterr()
    assert out.err.count("warning: collection stopped") == 1
    assert "collection stopped early" in out.out
    assert json.loads((tmp_path / "r.json").read_text())["collected"]["error"]
    complete(tmp_path / "c")


def test_a_file_source_waits_for_the_writer_so_nothing_is_dropped(tiny_models, tmp_path, monkeypatch):
    """A folder delivers every frame, so what it keeps must not depend on the machine's load:
    with a one-place queue and a slow writer, every considered frame is still written."""
    from conftest import street_frames
    (tmp_path / "frames").mkdir()
    for i, image in enumerate(street_frames(6, size=(160, 80))):
        cv2.imwrite(str(tmp_path / "frames" / f"shot{i}.png"), image)
    monkeypatch.setattr(collect_mod, "QUEUE_SIZE", 1)
    encode = collect_mod.encode_png
    monkeypatch.setattr(collect_mod, "encode_png", lambda image: time.sleep(0.05) or encode(image))
    root = tmp_path / "c"
    summary = run_pipeline(run_opts(tiny_models, tmp_path / "frames", root, collect_every=0.0))
    assert summary["collected"]["considered"] == 6
    assert summary["collected"]["dropped_full_queue"] == 0
    assert len(stems(root)) == 6
    complete(root)


def test_a_frame_never_takes_the_name_of_an_earlier_one(tmp_path):
    """Two runs within one second (or a stream that restarts its count) see the same frame
    index at the same second: the second frame gets a later name, not the first one's."""
    c = collector(tmp_path / "c", every_s=0.0, clock=lambda: 1_800_000_000.0)
    logits = np.zeros((1, 4, 4, labels.NUM_CATEGORIES), np.int8)
    mask = np.zeros((24, 32), np.uint8)
    named = []
    c._enqueue = lambda candidate: named.append(candidate.meta["stem"]) or True
    for _ in range(3):
        c._last_t = None  # the source started over
        c.offer(frame(0), logits, mask[:4, :4], mask)
    assert len(set(named)) == 3 and named == sorted(named)
