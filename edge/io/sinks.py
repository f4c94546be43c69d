"""Where rendered frames go: a video file or a folder of PNGs (encoded in a writer thread
so encoding overlaps inference), and an on-screen window.

``--save out.mp4`` or ``--save DIR`` (frame_000000.png, ...): the writer, codec and container
of each extension are the table in ``edge_seg.io.video``. Both grow under a hidden partial
name beside the final one (``edge_seg.io.publish.partial_path``) and are published by
``close()`` once complete and checked, which the run calls on every exit path (Ctrl-C, SIGTERM
and SIGHUP included). A killed run leaves the final name as it was. Every frame the encoder
takes is checked, and the finished video's container structure before it is published: a full
disk is an error, never "saved". With ``segment_s`` a video is cut into segments, each
published as it is finished, the oldest removed beyond ``max_files`` / ``max_bytes``.
"""
from __future__ import annotations

import os
import queue
import threading
import time
from pathlib import Path

import cv2
import numpy as np

from edge_seg import log as logs
from edge_seg.errors import OutputError, UserError
from edge_seg.io.readers import opencv_name, quiet_opencv
from edge_seg.io import video
from edge_seg.io.publish import cause, check_output, discard, output_error, partial_path, publish, publish_folder
from edge_seg.timing import LatencyStats

# MPEG-4 Part 2 cannot encode a frame narrower or shorter than this (MJPEG and H.264 can)
MIN_MPEG4_SIDE = 2
# free space asked of the folder before a video or frames folder starts (about a second
# of 1024x512 video): less is a full disk
VIDEO_HEADROOM = 1 << 20
FRAME_FILE = "frame_{:06d}.png"
ABANDON_WAIT_S = 2.0  # for the writer thread to finish its frame when an output is given up
_FALLBACK_SAID = []  # the OpenCV fallback is announced once a process


def is_video_path(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() in video.VIDEO_FORMATS


def _is_frame_file(name: str) -> bool:
    return name.startswith("frame_") and name.endswith(".png") and name[6:-4].isdigit()


def check_save_target(path: str | os.PathLike, inputs=(), overwrite: bool = False) -> Path:
    """Fail early (one line) when ``--save`` cannot be written or would replace an input,
    an old recording (without ``--overwrite``) or files that are not old frames."""
    path = Path(path).expanduser()
    if is_video_path(path):
        opencv_name(path, "--save")  # the encoder takes a file name
        return check_output(path, "--save", inputs=inputs, overwrite=overwrite, need=VIDEO_HEADROOM)
    if path.suffix and not path.is_dir():
        raise UserError(f"--save {path}: unknown video type {path.suffix!r}; use "
                        f"{', '.join(video.VIDEO_FORMATS)} or a folder for PNG frames")
    check_output(path, "--save", inputs=inputs, overwrite=overwrite, folder=True, need=VIDEO_HEADROOM)
    if path.is_dir():
        others = [p.name for p in path.iterdir() if not _is_frame_file(p.name)]
        if others:
            raise UserError(f"--save {path}: the folder holds files other than saved frames "
                            f"(e.g. {sorted(others)[0]}); choose an empty or new folder")
    return path


def container_complete(path: Path) -> bool:
    """Whether a closed video file is structurally whole, read without a decoder: MP4/MOV
    top-level boxes spanning the file with 'moov' (the index) and 'mdat' present; AVI a RIFF
    size matching the file; Matroska its EBML header (it needs no closing index)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(12)
        if head[:4] == b"RIFF":
            return int.from_bytes(head[4:8], "little") + 8 <= size
        if head[:4] == b"\x1a\x45\xdf\xa3":
            return True
        boxes, offset = set(), 0
        while offset + 8 <= size:
            f.seek(offset)
            header = f.read(16)
            length, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if length == 1:
                length = int.from_bytes(header[8:16], "big")
            elif length == 0:
                length = size - offset
            if length < 8:
                return False
            boxes.add(kind)
            offset += length
        return offset == size and {b"moov", b"mdat"} <= boxes


class FrameSink:
    """Writes frames in its own thread; ``write`` blocks only when ``queue_size`` are pending.
    ``path`` is published by ``close()``; until then frames go to ``self.partial``.

    ``segment_s`` cuts a video every so many seconds of video (frames / fps, so where it is
    cut does not depend on how fast frames come) into ``video.segment_path`` names, each
    published when it is finished; then the oldest segments of ``path`` beyond ``max_files``
    or ``max_bytes`` (earlier runs' included) are removed."""

    def __init__(self, path: str | os.PathLike, fps: float = 30.0, queue_size: int = 8,
                 inputs=(), overwrite: bool = False, segment_s: float | None = None,
                 max_files: int | None = None, max_bytes: int | None = None, log=None):
        self.path = check_save_target(path, inputs, overwrite)
        self.video = is_video_path(self.path)
        _check_segment_options(self.path, self.video, segment_s, max_files, max_bytes)
        self.fps = fps if fps and fps > 0 else 30.0
        self.segment_frames = max(1, round(segment_s * self.fps)) if segment_s else None
        self.max_files, self.max_bytes = max_files, max_bytes
        self.segments: list[dict] = []  # published segments: path, frames, removed (by a cap)
        self._log = log or logs.callback("save")
        self.format = video.VIDEO_FORMATS[self.path.suffix.lower()] if self.video else None
        self.pyav = self.video and video.uses_pyav(self.path.suffix.lower())
        self.encoder = self._expected_encoder()
        self._target = self.path  # the name the partial file is published under
        self.partial = None if self.segment_frames else partial_path(self.path)
        self.frames = 0
        self._in_segment = 0
        self.published = False
        self.encode = LatencyStats()
        self._writer = None
        self._size = None
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._error: BaseException | None = None
        self._abandoned = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.video:
                self.partial.mkdir()
        except OSError as e:
            raise output_error(f"--save {self.path}", e) from None
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._thread.start()

    def _expected_encoder(self) -> str:
        """The encoder as the banner names it, before a frame size is known."""
        if not self.video:
            return "PNG frames"
        if self.pyav:
            name = video.pick_encoder(fps=float(self.fps))
            return f"H.264 {name}" if name else "H.264 (no encoder opens here)"
        fourcc = self.format.fallback or self.format.codec
        if self.format.fallback and not _FALLBACK_SAID:
            _FALLBACK_SAID.append(True)
            self._log(logs.Line("save.fallback", f"warning: PyAV is not installed (pip install av): "
                                f"{self.path.suffix} videos are written as MPEG-4 Part 2 through "
                                "OpenCV, which browsers do not play"
                                + ("" if self.format.fallback_survives_kill else
                                   " and which plays nothing when the run is killed")))
        return f"{video.CODEC_NAMES[fourcc]} (OpenCV {fourcc})"

    def describe(self) -> str:
        what = f"{self.encoder}, {self.format.container}" if self.video else self.encoder
        if self.segment_frames:
            caps = [f"at most {self.max_files} files"] if self.max_files else []
            caps += [f"at most {_in_units(self.max_bytes)}"] if self.max_bytes else []
            what += f", segments of {self.segment_frames / self.fps:g} s" + "".join(f", {c}" for c in caps)
        return f"{self.path} ({what})"

    def summary(self) -> dict:
        """What the run report says about the recording."""
        path = self.path.with_name(f"{self.path.stem}-*{self.path.suffix}") if self.segment_frames else self.path
        return {"path": str(path), "frames": self.frames, "published": self.published,
                "encoder": self.encoder, "segments": self.segments if self.segment_frames else None}

    def write(self, image: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put(image)

    def close(self) -> None:
        """Write what is queued, finalise and check the file, then publish it under its
        final name; on any failure remove the partial file and raise OutputError."""
        try:
            if self._thread.is_alive():
                self._queue.put(None)
                self._thread.join()
            if self._error is not None:
                raise self._error
            if self.video and self._in_segment:
                self._finish_segment()
            elif not self.video and self.frames:
                publish_folder(self.partial, self.path, "--save")
            else:  # nothing (more) to publish: the final name stays as it was
                discard(self.partial)
            self.published = self.frames > 0
        except BaseException:
            self.abandon()
            raise

    def abandon(self) -> None:
        """Give up the output: the writer thread stops at its next frame (waited for
        briefly, so no frame lands in a folder being removed) and the partial file goes."""
        self._abandoned = True
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        try:
            self._queue.put_nowait(None)  # wakes a writer waiting for a frame
        except queue.Full:
            pass
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=ABANDON_WAIT_S)
        discard(self.partial)

    def _label(self) -> str:
        return f"--save {self.path}"

    def _no_space(self) -> bool:
        try:
            st = os.statvfs(self.path.parent)
        except OSError:
            return False
        return st.f_bavail * st.f_frsize < 64 << 10

    def _encoder_failed(self, what: str) -> OutputError:
        if self._no_space():
            return OutputError(f"{self._label()}: cannot write (no space left on the device) "
                               f"after {self.frames} frames")
        return OutputError(f"{self._label()}: {what} after {self.frames} frames")

    def _verify_video(self) -> None:
        """The finished file's size and container structure (an MP4 without its index,
        written last, does not play; an AVI's RIFF size is filled in when it is closed)."""
        try:
            size = self.partial.stat().st_size
            complete = size > 0 and container_complete(self.partial)
        except OSError as e:
            raise output_error(self._label(), e) from None
        if not complete:
            raise self._encoder_failed("the finished video is incomplete (the encoder could "
                                       "not finalise it)")

    def _finish_segment(self) -> None:
        """Finalise, check and publish the video written so far (the whole recording, or one
        segment), then keep the segments under their caps."""
        self._release()
        self._verify_video()
        publish(self.partial, self._target, "--save")
        self.partial = None
        if self.segment_frames:
            self.segments.append({"path": str(self._target), "frames": self._in_segment,
                                  "removed": False})
            self._log(logs.Line("save.published", f"note: --save: segment {self._target.name} "
                                f"published ({self._in_segment} frames)", **self.segments[-1]))
            self._apply_caps()
        self._in_segment = 0

    def _apply_caps(self) -> None:
        if self.max_files is None and self.max_bytes is None:
            return
        for old in video.over_cap(video.segment_files(self.path), self.max_files, self.max_bytes):
            try:
                old.unlink()
            except OSError as e:
                self._log(logs.Line("save.cap", f"warning: {self._label()}: cannot remove the "
                                    f"old segment {old.name} ({cause(e)})"))
                return
            for segment in self.segments:
                segment["removed"] = segment["removed"] or Path(segment["path"]).name == old.name

    def _release(self) -> None:
        writer, self._writer = self._writer, None
        if writer is None:
            return
        try:
            writer.release()
        except video.EncoderError as e:
            raise self._encoder_failed(str(e)) from None

    def _open(self, image: np.ndarray) -> None:
        h, w = image.shape[:2]
        if self.segment_frames:
            self._target = video.segment_path(self.path, time.time(), len(self.segments) + 1)
            self.partial = partial_path(self._target)
        if self.pyav:
            try:
                self._writer = video.PyAVWriter(self.partial, self.fps, (w, h))
            except video.EncoderError as e:
                discard(self.partial)
                if self._no_space():
                    raise self._encoder_failed("cannot start the video") from None
                raise OutputError(f"{self._label()}: {e}; try .avi or a folder") from None
            self._size, self.encoder = (w, h), self._writer.describe()
            return
        suffix = self.path.suffix.lower()
        codec = self.format.fallback or self.format.codec
        if codec == "mp4v" and min(w, h) < MIN_MPEG4_SIDE:
            raise UserError(f"{self._label()}: the frames are {w}x{h} pixels; MPEG-4 video needs "
                            f"at least {MIN_MPEG4_SIDE}x{MIN_MPEG4_SIDE}: save to .avi or a folder "
                            f"of PNGs instead, or use a larger source")
        quiet_opencv()  # its own "[ WARN ]" line on a full disk would precede ours
        writer = cv2.VideoWriter(str(self.partial), cv2.VideoWriter.fourcc(*codec), float(self.fps), (w, h))
        if not writer.isOpened():
            if self._no_space():
                raise self._encoder_failed("cannot start the video")
            raise OutputError(f"{self._label()}: the {suffix} encoder refused {w}x{h} frames "
                              f"(OpenCV cannot write this video type here); try .avi or a folder")
        self._writer, self._size = writer, (w, h)

    def _write_png(self, image: np.ndarray) -> None:
        ok, png = cv2.imencode(".png", image)
        if not ok:
            raise OutputError(f"{self._label()}: cannot encode a {image.shape[1]}x{image.shape[0]} frame as PNG")
        try:
            with open(self.partial / FRAME_FILE.format(self.frames), "wb") as f:
                f.write(png.tobytes())
        except OSError as e:
            raise OutputError(f"{self._label()}: cannot write frame {self.frames} ({cause(e)})") from None

    def _write_video(self, image: np.ndarray) -> None:
        if self._writer is None:
            self._open(image)
        if (image.shape[1], image.shape[0]) != self._size:
            image = cv2.resize(image, self._size, interpolation=cv2.INTER_AREA)
        # OpenCV >= 4.x returns False when the frame was not written (a full disk, a write
        # error); older versions return None
        if self._writer.write(image) is False:
            raise self._encoder_failed("the video encoder could not write a frame")
        self._in_segment += 1
        if self.segment_frames and self._in_segment >= self.segment_frames:
            self._finish_segment()

    def _run(self) -> None:
        try:
            while True:
                image = self._queue.get()
                if image is None or self._abandoned:
                    break
                t0 = time.perf_counter()
                if self.video:
                    self._write_video(image)
                else:
                    self._write_png(image)
                self.frames += 1
                self.encode.add((time.perf_counter() - t0) * 1e3)
        except BaseException as e:  # surfaced by write()/close()
            self._error = e
            while True:  # unblock a producer waiting on a full queue
                try:
                    if self._queue.get_nowait() is None:
                        break
                except queue.Empty:
                    break
        finally:
            try:
                self._release()
            except OutputError as e:
                self._error = self._error or e


def _in_units(size: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.3g} {unit}"
    return f"{size} bytes"


SEGMENTS_LISTED = 10  # the summary names the newest segments kept; the report has them all


def segment_lines(saved: dict | None) -> list[str]:
    """The summary's lines about the segments of a recording (none for a single file)."""
    segments = (saved or {}).get("segments")
    if not segments:
        return []
    kept = [s for s in segments if not s["removed"]]
    removed = len(segments) - len(kept)
    lines = [f"  {len(segments)} segments written, {len(kept)} kept"
             + (f", {removed} removed (the oldest, beyond --save-max-files / --save-max-bytes)"
                if removed else "")]
    if len(kept) > SEGMENTS_LISTED:
        lines.append(f"    ... {len(kept) - SEGMENTS_LISTED} earlier ones")
    lines += [f"    {s['path']} ({s['frames']} frames)" for s in kept[-SEGMENTS_LISTED:]]
    return lines


def _check_segment_options(path: Path, is_video: bool, segment_s, max_files, max_bytes) -> None:
    if segment_s is None:
        if max_files is not None or max_bytes is not None:
            raise UserError(f"--save-max-{'files' if max_files is not None else 'bytes'}: caps the "
                            f"segments of a recording, and needs --save-segment")
        return
    if not is_video:
        raise UserError(f"--save-segment: {path} is a folder of PNG frames; segments are videos "
                        f"(.mp4, .mkv)")
    if segment_s <= 0 or (max_files is not None and max_files < 1) or \
            (max_bytes is not None and max_bytes < 1):
        raise UserError("--save-segment, --save-max-files and --save-max-bytes must be positive")


def gui_available() -> bool:
    """True when OpenCV can open a window here (a GUI build and a display)."""
    if os.name == "posix" and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")) \
            and not os.uname().sysname == "Darwin":
        return False
    try:
        cv2.namedWindow("edge-seg", cv2.WINDOW_NORMAL)
        cv2.destroyWindow("edge-seg")
        return True
    except cv2.error:
        return False


class Window:
    """``--show``: the newest rendered image in a window, pumped from the main thread
    (GUI toolkits want that); q or Esc asks the run to stop."""
    TITLE = "edge-seg"

    def __init__(self):
        self._latest = None
        self._lock = threading.Lock()
        cv2.namedWindow(self.TITLE, cv2.WINDOW_NORMAL)

    def put(self, image: np.ndarray) -> None:
        with self._lock:
            self._latest = image

    def pump(self) -> bool:
        """Show the newest image; False when the user asked to quit."""
        with self._lock:
            image, self._latest = self._latest, None
        if image is not None:
            cv2.imshow(self.TITLE, image)
        key = cv2.waitKey(1) & 0xFF
        return key not in (ord("q"), 27)

    def close(self) -> None:
        try:
            cv2.destroyWindow(self.TITLE)
        except cv2.error:
            pass
