"""The render stage draws a frame only for an output that shows it: the sinks and the window
take every frame drawn; --serve's viewers draw the newest one themselves while they watch;
a headless run with neither draws nothing."""
from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import cv2
import numpy as np

from edge_seg.io.sources import Frame
from edge_seg.labels import CATEGORIES
from edge_seg.overlay import Overlay
from edge_seg.run.loop import STAGES, Renderer
from edge_seg.segmenter import decode_logits
from edge_seg.serve.server import FrameHub
from edge_seg.timing import StageTimes

FRAME_HW = (90, 120)


class CountingOverlay(Overlay):
    def __init__(self, **kw):
        super().__init__(**kw)
        self.calls = 0
        self._lock = threading.Lock()

    def render(self, frame_bgr, mask, hud_lines=None):
        with self._lock:
            self.calls += 1
        return super().render(frame_bgr, mask, hud_lines)


class ListSink:
    def __init__(self):
        self.images = []

    def write(self, image):
        self.images.append(image)


def frames_and_logits(n: int, out_hw: tuple[int, int], seed: int = 0):
    """Random frames and int8 logits at an output size (the model's, or half of it)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        image = rng.integers(0, 256, (*FRAME_HW, 3), dtype=np.uint8)
        logits = rng.integers(-128, 128, (1, *out_hw, 8), dtype=np.int8)
        yield Frame(image, i, time.perf_counter(), 0.0), logits


def reference_overlay(image, logits, alpha=0.5):
    """Blend computed independently: numpy argmax, NEAREST upsampling of the mask to the
    frame, colours from the label table, then alpha blending in float."""
    mask = np.argmax(logits[0], axis=-1).astype(np.uint8)
    full = cv2.resize(mask, image.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    colors = np.array([c.color[::-1] for c in sorted(CATEGORIES, key=lambda c: c.id)], np.float64)
    blended = (1 - alpha) * image.astype(np.float64) + alpha * colors[full]
    return blended


def run_renderer(items, overlay, **outputs):
    times = StageTimes(STAGES)
    # a segmenter whose input size is its logits' size
    segmenter = SimpleNamespace(postprocess=lambda logits: decode_logits(logits, logits.shape[2:0:-1]))
    renderer = Renderer(segmenter, overlay, times, **outputs)
    for frame, logits in items:
        renderer.submit(frame, logits)
    renderer.close()
    return renderer, times


def test_headless_without_outputs_draws_nothing_and_still_post_processes_every_frame():
    overlay = CountingOverlay(legend=False, hud=False)
    renderer, times = run_renderer(frames_and_logits(5, (32, 64)), overlay)
    assert renderer.frames == 5 and overlay.calls == 0
    assert times.stages["post"].n == times.stages["draw"].n == times.stages["frame"].n == 5


def test_saved_frames_are_drawn_from_the_mask_at_the_model_output_size():
    # output == model input (64x32) and output at stride 2 (32x16), coloured before they are
    # resized to the frame; a mask over a third of the frame (96x64) is resized first
    for out_hw in ((64, 96), (32, 64), (16, 32)):
        items = list(frames_and_logits(3, out_hw, seed=out_hw[0]))
        sink, overlay = ListSink(), CountingOverlay(legend=False, hud=False)
        run_renderer(items, overlay, sink=sink)
        assert overlay.calls == len(sink.images) == 3
        for (frame, logits), image in zip(items, sink.images):
            assert image.shape == frame.image.shape
            # addWeighted rounds once; the float reference may differ by that rounding only
            diff = np.abs(image.astype(np.float64) - reference_overlay(frame.image, logits))
            assert diff.max() <= 1.0, out_hw


def test_serve_draws_only_the_frames_a_viewer_takes_in_the_viewers_thread():
    hub, overlay = FrameHub(), CountingOverlay(legend=False, hud=False)
    items = list(frames_and_logits(6, (16, 32), seed=3))
    renderer, _ = run_renderer(items, overlay, hub=hub)
    assert renderer.frames == 6 and overlay.calls == 0 and hub.encoded == 0  # nobody watched
    seq, jpeg = hub.next_jpeg(0, 1.0)
    assert seq == 6 and overlay.calls == 1
    assert hub.next_jpeg(0, 1.0) == (6, jpeg) and overlay.calls == 1  # a second viewer: shared
    shown = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).astype(np.float64)
    frame, logits = items[-1]
    assert shown.shape == frame.image.shape
    # the newest frame (JPEG at quality 80 blurs noise: compare means, not pixels)
    err = np.abs(shown - reference_overlay(frame.image, logits)).mean()
    before, before_logits = items[-2]
    other = np.abs(shown - reference_overlay(before.image, before_logits)).mean()
    assert err < other


def test_a_saved_frame_is_drawn_once_for_the_sink_and_the_viewers():
    hub, sink, overlay = FrameHub(), ListSink(), CountingOverlay(legend=False, hud=False)
    run_renderer(frames_and_logits(4, (32, 64)), overlay, sink=sink, hub=hub)
    assert overlay.calls == 4
    hub.next_jpeg(0, 1.0)
    assert overlay.calls == 4 and hub.encoded == 1


def test_frame_hub_calls_an_offered_draw_once_and_only_for_a_frame_asked_for():
    hub, calls = FrameHub(), []
    image = np.full((40, 60, 3), 90, np.uint8)
    for i in range(5):
        hub.offer(lambda i=i: calls.append(i) or image)
    assert calls == []
    assert hub.next_jpeg(0, 1.0)[0] == 5 and calls == [4]  # only the newest is drawn
    assert hub.next_jpeg(0, 1.0)[0] == 5 and calls == [4]
    hub.offer(lambda: calls.append(5) or image)
    assert hub.next_jpeg(5, 1.0)[0] == 6 and calls == [4, 5]
