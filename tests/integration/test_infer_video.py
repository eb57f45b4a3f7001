"""``ruthgen infer`` with a video or a folder of images, against the real embedded tritonserver and the
sidecar: one camera's frames through InferStream, a temporal model seeing them as one sequence, and
the annotated video written frame for frame. The clip is made here from examples/scenes.py."""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from ruthgen.writer import build_repository
from ruthstack.cli import app
from sidecar.process import SidecarProcess

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "examples"))
import scenes  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

PLUGINS = ROOT / "tests" / "testdata" / "plugins"
FIRE = ("fire_detection", "2.1.0")
CLIP_FRAMES, CLIP_FPS = 18, 10.0


def read_video(path: Path) -> tuple[list[np.ndarray], float]:
    """Every frame (RGB) decoded, counted by reading, and the frame rate the file declares."""
    capture = cv2.VideoCapture(str(path))
    assert capture.isOpened(), path
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames, fps


def lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """A flame that flickers and grows on the floor: 18 frames at 10 fps, 640x480."""
    path = tmp_path_factory.mktemp("clip") / "flame.mp4"
    assert scenes.write_video(scenes.flame_sequence(frames=CLIP_FRAMES, fps=CLIP_FPS), path, CLIP_FPS) == 18
    return path


@pytest.fixture(scope="module")
def sidecar(module_triton_factory, tmp_path_factory):
    root = tmp_path_factory.mktemp("infer-video")
    models = root / "models"
    shutil.copytree(ROOT / "ai" / "models" / FIRE[0] / FIRE[1], models / FIRE[0] / FIRE[1])
    shutil.copytree(PLUGINS / "sc_temporal", models / "sc_temporal")
    repository = root / "model_repository"
    result = build_repository(models, repository)
    assert all(report.valid for report in result.reports), [r.to_dict() for r in result.reports]
    triton = module_triton_factory(repository, load_models=[])
    with SidecarProcess(triton.grpc_url, repository, port=0, log_path=root / "sidecar.log",
                        extra_args=["--http-port", "0"], startup_timeout_s=300) as process:
        yield process


def infer(sidecar, *arguments: str):
    result = CliRunner().invoke(app, ["infer", "--sidecar", sidecar.address, *arguments])
    return result, lines(result.stdout)


def test_infer_video_writes_the_annotated_video_with_every_frame_when_streamed(sidecar, clip, tmp_path):
    out = tmp_path / "annotated.mp4"
    result, answers = infer(sidecar, "--model", FIRE[0], "--version", FIRE[1], "--video", str(clip),
                            "--camera", "cam-store", "--annotate", str(out))
    assert result.exit_code == 0, result.output
    assert len(answers) == CLIP_FRAMES
    assert sorted(a["frame"] for a in answers) == list(range(CLIP_FRAMES))
    assert all(a["video"] == str(clip) and a["camera_id"] == "cam-store" for a in answers)
    assert all("result" in a for a in answers), [a.get("error") for a in answers]
    by_frame = {a["frame"]: a["result"] for a in answers}
    config = ROOT / "ai" / "models" / FIRE[0] / FIRE[1] / "config.yaml"
    window = yaml.safe_load(config.read_text())["window_frames"]
    observed = [by_frame[i]["frames_observed"] for i in range(CLIP_FRAMES)]
    assert observed == [min(i + 1, window) for i in range(CLIP_FRAMES)]  # one camera's sequence, in order
    events = [by_frame[i]["event_type"] for i in range(CLIP_FRAMES)]
    assert events[-1] == "fire_detected" and by_frame[CLIP_FRAMES - 1]["bounding_boxes"]

    source, _ = read_video(clip)
    annotated, fps = read_video(out)
    assert len(annotated) == len(source) == CLIP_FRAMES
    assert fps == pytest.approx(CLIP_FPS)
    assert annotated[0].shape == source[0].shape == (480, 640, 3)
    boxes = sum(len(by_frame[i]["bounding_boxes"]) for i in range(CLIP_FRAMES))
    assert f"annotated {out} ({CLIP_FRAMES} frames, {boxes} boxes)" in result.stderr
    last = by_frame[CLIP_FRAMES - 1]["bounding_boxes"][0]
    x, y = int(last["x"]), int(last["y"] + last["height"] / 2)  # the left edge of the last frame's box
    drawn = annotated[-1][y, max(0, x - 1) : x + 2].astype(int)
    plain = source[-1][y, max(0, x - 1) : x + 2].astype(int)
    assert np.abs(drawn - plain).max() > 60, "no box outline where the answer put the box"


def test_infer_folder_of_images_reaches_a_temporal_model_as_one_cameras_sequence(sidecar, tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for n, (rgb, _) in enumerate(scenes.flame_sequence(frames=4)):
        cv2.imwrite(str(folder / f"f{n}.jpg"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    result, answers = infer(sidecar, "--model", "sc_temporal", "--version", "1.0.0", str(folder),
                            "--camera", "gate-2")
    assert result.exit_code == 0, result.output
    counted = sorted((a["result"]["count"], a["result"]["start"], a["frame_id"]) for a in answers)
    assert counted == [(1, True, "f0.jpg"), (2, False, "f1.jpg"), (3, False, "f2.jpg"), (4, False, "f3.jpg")]
    assert {a["result"]["camera_id"] for a in answers} == {"gate-2"}

    # Without --camera the run has a camera of its own: a new sequence, never "camera_id is required".
    again, answers = infer(sidecar, "--model", "sc_temporal", "--version", "1.0.0", str(folder / "f0.jpg"),
                           str(folder / "f1.jpg"))
    assert again.exit_code == 0, again.output
    cameras = {a["result"]["camera_id"] for a in answers}
    assert len(cameras) == 1 and cameras != {"gate-2"} and cameras != {""}
    assert sorted(a["result"]["count"] for a in answers) == [1, 2]


def test_infer_video_realtime_sends_at_the_files_frame_rate(sidecar, clip):
    started = time.monotonic()
    result, answers = infer(sidecar, "--model", "sc_temporal", "--version", "1.0.0", "--video", str(clip),
                            "--realtime")
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert len(answers) == CLIP_FRAMES
    assert elapsed >= (CLIP_FRAMES - 1) / CLIP_FPS  # the last frame leaves 1.7 s after the first
