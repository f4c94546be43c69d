"""``edge-seg run --collect DIR``: keep the frames the model is least sure of, for labelling.

A deployed model meets streets it never trained on; the frames worth labelling are the ones
it hesitates on. The render thread *considers* at most one frame per ``--collect-every``
seconds of source time (the frame's position over the source's frame rate; a source without
one, such as an image folder, counts each image as a second), scores it from the raw logits
at the model's output size and hands it to a writer thread. The writer encodes the PNGs,
applies the caps and publishes the files, so the live loop never waits for a disk.

The score (higher = more useful) is the sum of three terms, each in [0, 1]:

* ``low_margin_share``: the share of pixels whose top-2 logit margin is below
  ``LOW_MARGIN`` logits (compared in the output's own quantised units for an int8 model);
* ``disagreement``: 1 - the drift check's agreement mIoU(7) on this very frame, when
  ``--check-float`` runs (its result, not a second float inference); 0 otherwise;
* ``rare``: 1 - the share of considered frames on which the rarest category of this frame
  was predicted, when that share is below ``RARE_SHARE`` (a street with people after hours
  of empty road); 0 while fewer than ``RARE_MIN_FRAMES`` frames were seen.

The largest term names the ``reason`` (``margin``, ``disagreement`` or ``rare:<category>``).
The mean margin is recorded beside them (``scores``); it ranks frames of one model only,
so it stays out of the score. The folder layout is the folder-format dataset of
docs/datasets.md plus ``meta/`` (docs/running.md "Collecting frames to label").

When a cap is reached, the collection keeps covering the whole time it ran: of the two kept
frames nearest in time (the new one counts), the less useful one goes (ties: the older), and
again until the caps hold; a new frame that would go is not written. Each kept frame is then
the most useful of its own stretch of time, and the stretches are about equally long. Keeping
the most useful frames overall instead bunches them: the hard minutes of a drive (one crowded
crossing) fill the collection, and a fine-tune on them learns that crossing, not the street
(docs/adapting.md). ``capture_s`` places a frame in time: when a live source delivered it, or
the run's start plus its position in a file or folder.
"""
from __future__ import annotations

import json
import logging
import queue
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from edge_seg import labels
from edge_seg import log as logs
from edge_seg.errors import OutputError, UserError
from edge_seg.io.publish import atomic_write_bytes, atomic_write_json, cause, check_output
from edge_seg.run.drift import lower_priority

DEFAULT_EVERY_S = 1.0
DEFAULT_MAX_FRAMES = 500
LOW_MARGIN = 1.0          # logits: below this the top two categories are within a factor e
RARE_SHARE = 0.05         # a category predicted on fewer of the considered frames is rare
RARE_MIN_FRAMES = 20      # before this many frames, nothing is rare yet
PRESENT_SHARE = 0.005     # a category counts as predicted on a frame above this pixel share
QUEUE_SIZE = 2            # frames waiting for the writer; more are dropped and counted
WRITER_NICE = 10          # the writer yields the cores to the pipeline
GAP_TIES = 0.01           # gaps within 1% of the smallest are equally small
STEM_RE = re.compile(r"\d{8}T\d{6}Z-\d{7}")
PARTS = ("images", "masks", "meta")


def mapping() -> dict:
    """mapping.json of a collection: the mask values are the catIds themselves."""
    out = {str(c.id): c.name for c in labels.CATEGORIES}
    out[str(labels.IGNORE)] = "ignore"
    return out


def output_scale(segmenter) -> float:
    """Logits per quantised step of the model's output (1.0 for a float output)."""
    if getattr(segmenter, "output_dtype", np.float32) == np.float32:
        return 1.0
    try:
        scale = float(segmenter.interpreter.get_output_details()[0]["quantization"][0])
    except (AttributeError, IndexError, KeyError, TypeError):
        return 1.0
    return scale if scale > 0 else 1.0


def margin_signals(logits: np.ndarray, threshold: float) -> dict:
    """Mean top-2 margin and the share of pixels below ``threshold``, in the logits' own
    units (integer maths for an integer output)."""
    x = logits[0] if logits.ndim == 4 else logits
    top2 = np.partition(x, x.shape[-1] - 2, axis=-1)[..., -2:]
    wide = np.int32 if np.issubdtype(x.dtype, np.integer) else np.float32
    margin = top2[..., 1].astype(wide) - top2[..., 0].astype(wide)
    return {"margin_mean": float(margin.mean()), "low_margin_share": float((margin < threshold).mean())}


def make_stem(when: float, frame_index: int) -> str:
    stamp = datetime.fromtimestamp(when, timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    # seven digits last a camera four days at 30 fps; the time before them keeps the order
    return f"{stamp}-{frame_index % 10_000_000:07d}"


def iso_time(when: float) -> str:
    return datetime.fromtimestamp(when, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Candidate:
    """A considered frame on its way to the writer."""
    image: np.ndarray
    mask: np.ndarray
    meta: dict

    @property
    def score(self) -> float:
        return self.meta["score"]


@dataclass
class Kept:
    stem: str
    score: float
    bytes: int
    capture_s: float


def less_useful_first(k: Kept) -> tuple:
    """Usefulness order, least first; ties: the older frame."""
    return k.score, k.capture_s, k.stem


def capture_s_of(meta: dict) -> float:
    """A kept frame's place in time; a collection written before ``capture_s`` existed
    falls back to the second in its stem."""
    value = meta.get("capture_s")
    if isinstance(value, (int, float)) and value == value:
        return float(value)
    return datetime.strptime(meta["stem"][:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp()


def finish_scores(scores: dict) -> tuple[float, str]:
    """(score, reason) from the signals: see the module docstring."""
    terms = {"margin": scores["low_margin_share"],
             "disagreement": scores.get("disagreement") or 0.0,
             f"rare:{scores.get('rare_category')}": scores.get("rare") or 0.0}
    reason = max(terms, key=terms.get)
    return float(sum(terms.values())), reason


class Folder:
    """The collection on disk and its caps. Only the writer thread touches it."""

    def __init__(self, root: Path, max_frames: int, max_bytes: int | None):
        self.root, self.max_frames, self.max_bytes = Path(root), max_frames, max_bytes
        self.kept: dict[str, Kept] = {}
        self.removed = 0
        self.bytes = 0  # kept up to date, not summed: other threads read it while it changes

    def open(self, inputs=()) -> None:
        """Create or continue: earlier frames count toward the caps; a frame whose JSON
        never got written (a kill mid-frame) is cleared away."""
        check_target(self.root, inputs)
        try:
            for part in PARTS:
                (self.root / part).mkdir(parents=True, exist_ok=True)
            if not (self.root / "mapping.json").is_file():
                atomic_write_json(self.root / "mapping.json", mapping(), "--collect")
            self._read_existing()
        except OSError as e:
            raise UserError(f"--collect {self.root}: cannot write ({cause(e)})") from None
        except OutputError as e:
            raise UserError(str(e)) from None

    def _read_existing(self) -> None:
        for meta in sorted((self.root / "meta").glob("*.json")):
            stem = meta.stem
            try:
                data = json.loads(meta.read_text())
                score, when = float(data["score"]), capture_s_of({**data, "stem": stem})
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # not one of ours: left alone, not counted
            self._keep(Kept(stem, score, sum(self._size(p) for p in self.paths(stem)), when))
        for part in ("images", "masks"):
            for path in (self.root / part).glob("*.png"):
                if STEM_RE.fullmatch(path.stem) and path.stem not in self.kept:
                    path.unlink(missing_ok=True)

    @staticmethod
    def _size(path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError:
            return 0

    def paths(self, stem: str) -> tuple[Path, Path, Path]:
        """(meta, image, mask): the order a frame is removed in; written in reverse."""
        return (self.root / "meta" / f"{stem}.json", self.root / "images" / f"{stem}.png",
                self.root / "masks" / f"{stem}.png")

    def _keep(self, kept: Kept) -> None:
        self.kept[kept.stem] = kept
        self.bytes += kept.bytes

    def fits(self, count: int, total: int) -> bool:
        return count <= self.max_frames and (self.max_bytes is None or total <= self.max_bytes)

    def victims(self, new: Kept) -> list[str] | None:
        """The kept frames to remove so that ``new`` fits: of the two frames nearest in time,
        the less useful goes, until the caps hold (see the module docstring). Gaps within
        ``GAP_TIES`` of the smallest count as equal, and then the least useful of their
        losers goes, so evenly spaced frames (an image folder) are not thinned from the
        start. None when ``new`` itself would go."""
        pool = sorted([*self.kept.values(), new], key=lambda k: (k.capture_s, k.stem))
        count, total, out = len(pool), self.bytes + new.bytes, []
        while not self.fits(count, total):
            if len(pool) < 2:
                return None
            gaps = [b.capture_s - a.capture_s for a, b in zip(pool, pool[1:])]
            smallest = min(gaps)
            losers = [min(pool[i], pool[i + 1], key=less_useful_first)
                      for i, gap in enumerate(gaps) if gap <= smallest + GAP_TIES * max(smallest, 1e-9)]
            loser = min(losers, key=less_useful_first)
            if loser is new:
                return None
            pool.remove(loser)
            out.append(loser.stem)
            count, total = count - 1, total - loser.bytes
        return out

    def remove(self, stem: str) -> None:
        for path in self.paths(stem):
            path.unlink(missing_ok=True)
        self.bytes -= self.kept.pop(stem).bytes
        self.removed += 1

    def add(self, stem: str, image_png: bytes, mask_png: bytes, meta: dict) -> int:
        """Image, mask, then the JSON: the frame exists once its JSON does."""
        meta_path, image_path, mask_path = self.paths(stem)
        try:
            atomic_write_bytes(image_path, image_png, "--collect")
            atomic_write_bytes(mask_path, mask_png, "--collect")
            data = (json.dumps(logs.finite(meta), indent=2) + "\n").encode()
            atomic_write_bytes(meta_path, data, "--collect")
        except BaseException:
            for path in (image_path, mask_path):
                path.unlink(missing_ok=True)
            raise
        size = len(image_png) + len(mask_png) + len(data)
        self._keep(Kept(stem, meta["score"], size, capture_s_of(meta)))
        return size


def check_target(root, inputs=(), save: str | None = None) -> Path:
    """Before anything starts. Not an input, and apart from --save: a frames folder is
    published by replacing the folder, which would take a collection inside it along."""
    path = check_output(root, "--collect", inputs=inputs, folder=True)
    if save:
        ours, theirs = (Path(p).expanduser().absolute() for p in (path, save))
        if ours == theirs or theirs in ours.parents or ours in theirs.parents:
            raise UserError(f"--collect {root}: overlaps --save {save}; keep the collection "
                            f"and the recording apart")
    return path


def encode_png(image: np.ndarray) -> bytes:
    ok, png = cv2.imencode(".png", image)
    if not ok:
        raise OutputError("--collect: PNG encoding failed")
    return png.tobytes()


class Collector:
    """The render thread's side (``offer``) and the writer thread (``_run``)."""

    def __init__(self, root, *, source_spec: str, model_path, model_sha256: str | None,
                 every_s: float = DEFAULT_EVERY_S, max_frames: int = DEFAULT_MAX_FRAMES,
                 max_bytes: int | None = None, source_fps: float | None = None,
                 source_names: list | None = None, margin_threshold: float = LOW_MARGIN,
                 inputs=(), clock: Callable[[], float] = time.time,
                 log: Callable[[str], None] | None = None, wait: bool = False):
        if every_s < 0:
            raise UserError(f"--collect-every {every_s:g}: must be 0 (every frame) or more")
        if max_frames < 1:
            raise UserError(f"--collect-max {max_frames}: must be at least 1")
        self.folder = Folder(Path(root).expanduser(), max_frames, max_bytes)
        self.folder.open(inputs)
        self.source_spec, self.model_path = source_spec, Path(model_path)
        self.model_sha256 = model_sha256
        self.every_s, self.source_fps, self.source_names = float(every_s), source_fps, source_names
        self.margin_threshold = margin_threshold
        self.clock, self.log = clock, log or logs.callback("collect")
        # A file or folder delivers every frame and can wait for the writer, so what is kept
        # does not depend on how busy the machine is; a live source never waits.
        self.wait = wait
        self.considered = 0
        self.dropped_full_queue = 0
        self.kept_now = 0        # frames this run added
        self.error: str | None = None
        self.cpu_s = {"render": 0.0, "writer": 0.0}  # CPU time collecting costs, per thread
        self.category_frames = np.zeros(labels.NUM_CATEGORIES, np.int64)
        self._last_t: float | None = None
        self._started = self.clock()
        self._stems: set[str] | None = None  # every stem named so far (_new_stem)
        self._drift = None
        self._parked: dict[int, Candidate] = {}  # waiting for the drift check's verdict
        self._verdicts: dict[int, float] = {}     # ... or the verdict came first
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue(maxsize=QUEUE_SIZE)
        self._thread = threading.Thread(target=self._run, name="collect-writer", daemon=True)

    def describe(self) -> str:
        size = "" if self.folder.max_bytes is None else f", {self.folder.max_bytes / 1e6:.0f} MB"
        return (f"{self.folder.root} (one frame per {self.every_s:g} s at most, keeps at most "
                f"{self.folder.max_frames}{size}, spread over time; {len(self.folder.kept)} already there)")

    def follow(self, drift) -> None:
        """Score by the drift check's agreement too: frames are then considered among those
        it checks, and go to the writer once its verdict is in."""
        self._drift = drift
        drift.listener = self.on_check

    def start(self) -> "Collector":
        self._thread.start()
        return self

    # -- the render thread ---------------------------------------------------------------
    def source_time(self, frame) -> float:
        return frame.index / self.source_fps if self.source_fps else float(frame.index)

    def due(self, frame) -> bool:
        """At most one frame per ``every_s`` of source time."""
        if self.error is not None:
            return False
        t = self.source_time(frame)
        # a position behind the last one: the source started over (a stream reconnected)
        return self._last_t is None or t - self._last_t >= self.every_s or t < self._last_t

    def offer(self, frame, logits: np.ndarray, model_mask: np.ndarray, mask: np.ndarray,
              check: int | None = None) -> bool:
        """Consider ``frame`` if it is due; never waits. ``check``: the frame number the
        drift check took it under (None: not checked). True when it was taken."""
        following = self._drift is not None and self._drift.error is None
        if not self.due(frame) or (following and check is None):
            return False
        t0 = time.thread_time()
        self._last_t = self.source_time(frame)
        self.considered += 1
        scores = margin_signals(logits, self.margin_threshold)
        scores.update(self._rare(model_mask))
        c = self._candidate(frame, mask, scores)
        self.cpu_s["render"] += time.thread_time() - t0
        if not following:
            return self._enqueue(c)
        with self._lock:
            miou7 = self._verdicts.pop(check, None)
            if miou7 is None:
                self._parked[check] = c
        return True if miou7 is None else self._scored(c, miou7)

    def on_check(self, frame_number: int, miou7: float) -> None:
        """The drift thread: a checked frame's agreement with the float model (it may
        arrive before the render thread has considered that frame)."""
        with self._lock:
            c = self._parked.pop(frame_number, None)
            if c is None:
                self._verdicts[frame_number] = miou7
                for old in sorted(self._verdicts)[:-4]:  # two in the check's queue at most
                    del self._verdicts[old]
        if c is not None:
            self._scored(c, miou7)

    def _scored(self, c: Candidate, miou7: float) -> bool:
        c.meta["scores"]["disagreement"] = 0.0 if miou7 != miou7 else 1.0 - float(miou7)
        c.meta["score"], c.meta["reason"] = finish_scores(c.meta["scores"])
        return self._enqueue(c)

    def _rare(self, model_mask: np.ndarray) -> dict:
        share = np.bincount(model_mask.ravel(), minlength=labels.NUM_CATEGORIES)[:labels.NUM_CATEGORIES]
        present = share > PRESENT_SHARE * model_mask.size
        present[labels.VOID] = False
        self.category_frames += present
        seen = self.considered
        if seen < RARE_MIN_FRAMES or not present.any():
            return {"rare": 0.0, "rare_category": None}
        freq = np.where(present, self.category_frames / seen, np.inf)
        cat = int(np.argmin(freq))
        rare = 1.0 - float(freq[cat]) if freq[cat] < RARE_SHARE else 0.0
        return {"rare": rare, "rare_category": labels.CATEGORY_NAMES[cat]}

    def _candidate(self, frame, mask: np.ndarray, scores: dict) -> Candidate:
        now = self.clock()
        index = int(frame.index)
        name = None
        if self.source_names is not None and 0 <= index < len(self.source_names):
            name = Path(self.source_names[index]).name
        # a file plays back faster than it was filmed: its frames sit at their own positions
        capture = self._started + self.source_time(frame) if self.wait else now
        meta = {"stem": self._new_stem(now, index), "time": iso_time(now), "capture_s": capture,
                "source": self.source_spec,
                "frame_index": index, "source_name": name, "model": self.model_path.name,
                "model_sha256": self.model_sha256, "reason": None, "score": None,
                "scores": scores, "labelled": False}
        meta["score"], meta["reason"] = finish_scores(scores)
        return Candidate(frame.image.copy(), np.ascontiguousarray(mask, np.uint8), meta)

    def _new_stem(self, now: float, index: int) -> str:
        """A stem no frame of this folder has had: a second run within the same second as the
        first, or a stream that restarted its frame count, would otherwise name a frame as
        an earlier one and overwrite it. The stem's second moves on; the JSON keeps the time."""
        if self._stems is None:
            self._stems = set(self.folder.kept)
        stem = make_stem(now, index)
        while stem in self._stems:
            now += 1.0
            stem = make_stem(now, index)
        self._stems.add(stem)
        return stem

    def _enqueue(self, c: Candidate) -> bool:
        try:
            self._queue.put(c, block=self.wait)
            return True
        except queue.Full:
            self.dropped_full_queue += 1
            return False

    # -- the writer thread ---------------------------------------------------------------
    def _run(self) -> None:
        lower_priority(WRITER_NICE)
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.error is not None:
                continue
            t0 = time.thread_time()
            try:
                self.write(item)
            except (OSError, OutputError) as e:
                self.error = str(e) if isinstance(e, OutputError) else f"--collect: {cause(e)}"
                self.log(logs.Line("collect.stopped", f"warning: collection stopped, the run goes "
                                   f"on: {self.error}", path=str(self.folder.root)))
            finally:
                self.cpu_s["writer"] += time.thread_time() - t0

    def write(self, c: Candidate) -> bool:
        """Keep ``c`` if it fits the caps or wins its place (``Folder.victims``)."""
        stem = c.meta["stem"]
        when = capture_s_of(c.meta)
        if stem in self.folder.kept or self.folder.victims(Kept(stem, c.score, 0, when)) is None:
            return False  # not worth encoding
        image_png, mask_png = encode_png(c.image), encode_png(c.mask)
        size = len(image_png) + len(mask_png) + 1024  # the JSON: well under a kilobyte
        victims = self.folder.victims(Kept(stem, c.score, size, when))
        if victims is None:
            return False
        for victim in victims:
            self.folder.remove(victim)
            self._event("collect.removed", f"collect: removed {victim}", stem=victim)
        self.folder.add(stem, image_png, mask_png, c.meta)
        self.kept_now += 1
        self._event("collect.kept", f"collect: kept {stem} ({c.meta['reason']}, score "
                    f"{c.score:.3f})", stem=stem, reason=c.meta["reason"], score=c.score)
        return True

    @staticmethod
    def _event(event: str, message: str, **fields) -> None:
        # one per kept frame: a record for log shippers, not a line for the operator
        logs.emit(logging.INFO if logs.is_json() else logging.DEBUG, event, message, **fields)

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop. Frames whose drift check never reported (it
        stopped, or the run ended first) go without a disagreement score."""
        with self._lock:
            parked, self._parked = list(self._parked.values()), {}
        for c in parked:
            self._enqueue(c)
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout=timeout)

    def summary(self) -> dict:
        return {"path": str(self.folder.root), "kept": len(self.folder.kept),
                "kept_this_run": self.kept_now, "considered": self.considered,
                "dropped_full_queue": self.dropped_full_queue, "removed": self.folder.removed,
                "bytes": self.folder.bytes, "cpu_s": sum(self.cpu_s.values()), "error": self.error}


def summary_lines(collected: dict | None) -> list[str]:
    if not collected:
        return []
    c = collected
    lines = [f"  collected {c['kept_this_run']} frames to {c['path']} ({c['kept']} kept in all, "
             f"{c['bytes'] / 1e6:.1f} MB; {c['considered']} considered, {c['removed']} removed "
             f"to make room, {c['dropped_full_queue']} dropped while the writer was busy)"]
    if c.get("error"):
        lines.append(f"  collection stopped early: {c['error']}")
    return lines
