"""ruthstack.media: the frames ``ruthgen infer`` sends (images, folders, video) and the video it writes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ruthgen.errors import UsageError
from ruthstack.media import OrderedVideo, VideoSource, encode, image_files, image_frames, is_video_path

COLOURS = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (250, 250, 10), (10, 250, 250)]


def solid(colour, width: int = 64, height: int = 48) -> np.ndarray:
    return np.full((height, width, 3), colour, np.uint8)


def read_back(path) -> list[np.ndarray]:
    return [frame.image() for frame in VideoSource(path).frames()]


def test_image_files_expands_folders_to_their_images_in_name_order(tmp_path):
    folder = tmp_path / "cam"
    folder.mkdir()
    for name in ("b.png", "a.jpg", "c.JPEG", "notes.txt"):
        (folder / name).write_bytes(b"x")
    single = tmp_path / "z.jpg"
    single.write_bytes(b"x")
    assert image_files([single, folder]) == [single, folder / "a.jpg", folder / "b.png", folder / "c.JPEG"]


def test_image_files_refuses_a_folder_without_images(tmp_path):
    with pytest.raises(UsageError, match="holds no JPEG or PNG"):
        image_files([tmp_path])


def test_image_frames_are_named_after_their_files_and_placed_at_the_given_rate(tmp_path):
    paths = [tmp_path / "a" / "f.jpg", tmp_path / "b" / "f.jpg", tmp_path / "g.png"]
    frames = list(image_frames(paths, fps=4))
    assert [f.frame_id for f in frames] == ["f.jpg", "f.jpg#1", "g.png"]
    assert [f.position_ms for f in frames] == [0, 250, 500]
    assert [f.position_ms for f in image_frames(paths)] == [None, None, None]


@pytest.mark.parametrize("fmt", ["jpeg", "png"])
def test_encode_gives_an_image_of_the_frame_when_compressed(fmt):
    rgb = solid((200, 100, 50))
    decoded = cv2.cvtColor(cv2.imdecode(np.frombuffer(encode(rgb, fmt), np.uint8), cv2.IMREAD_COLOR),
                           cv2.COLOR_BGR2RGB)
    assert decoded.shape == rgb.shape
    assert np.abs(decoded.astype(int) - rgb).max() <= 3


def test_encode_gives_the_pixels_in_the_channel_order_of_raw_formats():
    rgb = solid((200, 100, 50), 4, 2)
    assert encode(rgb, "raw_rgb")[:3] == bytes([200, 100, 50])
    assert encode(rgb, "raw_bgr")[:3] == bytes([50, 100, 200])
    assert len(encode(rgb, "raw_rgb")) == 4 * 2 * 3


def test_ordered_video_writes_frames_in_index_order_whatever_order_they_come_in(tmp_path):
    out = tmp_path / "out" / "v.mp4"
    video = OrderedVideo(out, fps=5)
    for index in (2, 0, 4, 1, 3):
        video.add(index, solid(COLOURS[index]))
    assert video.close() == 5
    frames = read_back(out)
    assert len(frames) == 5
    for frame, colour in zip(frames, COLOURS, strict=True):
        assert np.abs(frame.reshape(-1, 3).mean(axis=0) - colour).max() < 12


def test_ordered_video_writes_what_waits_at_close_and_resizes_to_the_first_frame(tmp_path):
    out = tmp_path / "v.avi"
    video = OrderedVideo(out, fps=5)
    video.add(1, solid(COLOURS[1], 32, 24))  # frame 0 never comes
    video.add(3, solid(COLOURS[3]))
    assert video.frames == 0
    assert video.close() == 2
    frames = read_back(out)
    assert [f.shape for f in frames] == [(24, 32, 3), (24, 32, 3)]


def test_ordered_video_refuses_a_file_that_is_not_a_video(tmp_path):
    assert is_video_path(tmp_path / "a.MP4") and not is_video_path(tmp_path / "a.png")
    with pytest.raises(UsageError, match="write a video as"):
        OrderedVideo(tmp_path / "a.png", fps=5)


def test_video_source_reads_every_frame_with_its_position_and_the_files_rate(tmp_path):
    out = tmp_path / "clip.mp4"
    video = OrderedVideo(out, fps=8)
    for index, colour in enumerate(COLOURS):
        video.add(index, solid(colour))
    video.close()
    source = VideoSource(out)
    frames = list(source.frames())
    assert source.fps == pytest.approx(8)
    assert [f.frame_id for f in frames] == ["000000", "000001", "000002", "000003", "000004"]
    assert [f.position_ms for f in frames] == [0, 125, 250, 375, 500]
    assert frames[2].image().shape == (48, 64, 3)


def test_video_source_refuses_a_file_it_cannot_read(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    with pytest.raises(UsageError, match="cannot read the video"):
        VideoSource(broken)
