"""The demo clip is rendered once into a lossless cached video and played from there; a
damaged cache is rendered again and an unusable one falls back to live rendering."""
from __future__ import annotations

import numpy as np
import pytest

from edge_seg import scenes
from edge_seg.io import demo, readers, sources

SIZE, SEED, FRAMES = (96, 48), 3, 4


def expected(n=FRAMES):
    return [s.image for s in scenes.render_clip(SEED, n, size=SIZE)]


def read_all(reader, n):
    return [reader.read() for _ in range(n)]


@pytest.fixture
def warnings() -> list[str]:
    return []


def test_cached_frames_are_the_renderers_frames_and_the_clip_loops(tmp_path, warnings):
    reader = demo.open_demo(SIZE, SEED, frames=FRAMES, folder=tmp_path, log=warnings.append)
    assert isinstance(reader, demo.CachedDemoReader)
    frames = read_all(reader, FRAMES + 2)
    want = expected()
    for got, ref in zip(frames, want + want[:2]):
        assert np.array_equal(got, ref)
    assert warnings == []
    assert len(list(tmp_path.glob("demo-96x48-seed3-*.avi"))) == 1


def test_a_second_run_plays_the_cache_without_rendering(tmp_path, warnings):
    demo.open_demo(SIZE, SEED, frames=FRAMES, folder=tmp_path, log=warnings.append)
    cache = demo.DemoCache(tmp_path, SIZE, SEED, warnings.append)
    assert cache.find(FRAMES) is not None
    assert cache.find(FRAMES - 2) is not None          # a longer clip serves a shorter run
    assert cache.find(FRAMES + 1) is None              # ... not a longer one
    assert cache.rendered == 0


def test_a_longer_run_renders_a_longer_clip_and_drops_the_short_one(tmp_path, warnings):
    demo.open_demo(SIZE, SEED, frames=2, folder=tmp_path, log=warnings.append)
    reader = demo.open_demo(SIZE, SEED, frames=FRAMES, folder=tmp_path, log=warnings.append)
    assert [p.name.split("-")[-2] for p in tmp_path.iterdir()] == [f"{FRAMES}f"]
    assert all(np.array_equal(a, b) for a, b in zip(read_all(reader, FRAMES), expected()))


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_cache_is_rendered_again(tmp_path, warnings, damage):
    demo.open_demo(SIZE, SEED, frames=FRAMES, folder=tmp_path, log=warnings.append)
    (path,) = tmp_path.iterdir()
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))

    cache = demo.DemoCache(tmp_path, SIZE, SEED, warnings.append)
    found = cache.find(FRAMES) or cache.render(FRAMES)
    assert cache.rendered == 1
    assert len(warnings) == 1 and "damaged" in warnings[0] and "\n" not in warnings[0]
    reader = demo.CachedDemoReader(found[0], SIZE)
    assert reader.open()
    assert all(np.array_equal(a, b) for a, b in zip(read_all(reader, FRAMES), expected()))


def test_an_unwritable_cache_still_runs_live_with_one_warning(tmp_path, warnings):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    reader = demo.open_demo(SIZE, SEED, frames=FRAMES, folder=blocker / "demo", log=warnings.append)
    assert type(reader) is readers.DemoReader
    assert len(warnings) == 1 and warnings[0].startswith("warning: ") and "live" in warnings[0]
    assert all(np.array_equal(a, b) for a, b in zip(read_all(reader, FRAMES), expected()))


def test_a_changed_renderer_is_a_new_clip(tmp_path, warnings, monkeypatch):
    demo.open_demo(SIZE, SEED, frames=FRAMES, folder=tmp_path, log=warnings.append)
    monkeypatch.setattr(demo, "renderer_version", lambda: "0" * 12)
    cache = demo.DemoCache(tmp_path, SIZE, SEED, warnings.append)
    assert cache.find(FRAMES) is None


def test_the_run_reads_the_demo_from_the_cache_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_SEG_CACHE", str(tmp_path))
    reader = sources.open_reader("demo", demo_size=SIZE, demo_frames=2, log=lambda m: None)
    assert isinstance(reader, demo.CachedDemoReader)
    assert reader.path.parent == tmp_path / "demo" and reader.path.name.split("-")[-2] == "2f"


def test_a_run_with_an_unwritable_cache_warns_once_and_completes(tiny_models, tmp_path, monkeypatch,
                                                                 capsys):
    from edge_seg.run.command import RunOptions, run_pipeline
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("EDGE_SEG_CACHE", str(blocker))
    s = run_pipeline(RunOptions(source="demo", model=str(tiny_models["int8"]), show=False,
                                max_frames=2))
    assert s["frames"] == 2
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "demo" in line and "live" in line] == [
        line for line in err.splitlines() if line.startswith("warning:")]
    assert err.count("warning:") == 1 and "Traceback" not in err
