"""Vision-LLM data (lmforge/data/vision.py, formats.py, load.py): LLaMA-Factory's and ms-swift's
image rows become one canonical row ({messages with <image> / <video>, images, videos: absolute
paths}); placeholder counts, missing and corrupt files are one-line errors naming file:line (or
counted with --skip_bad_rows); --image_dir; pixel bounds; GIF / frame-folder video sampling."""

from __future__ import annotations

import json
import os

import pytest
from PIL import Image

from lmforge.data import vision
from lmforge.data.check import check_dataset, format_report
from lmforge.data.load import iter_rows_streaming, load_rows
from lmforge.errors import DataError, LmforgeError

Q, A = "What colour is it?", "red"


def _png(path, size=(8, 8), colour=(255, 0, 0)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, colour).save(path)
    return str(path)


def _jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return str(path)


def _load(spec, tmp_path, kind="chat", **kw):
    return load_rows(str(spec), kind, cache_dir=str(tmp_path / "cache"), **kw)


def _canon(row):
    return {
        "turns": [(m["role"], m["content"]) for m in row["messages"]],
        "images": row["images"],
        "videos": row["videos"],
    }


def _error(fn) -> str:
    with pytest.raises(LmforgeError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


@pytest.fixture
def site(tmp_path):
    """data/img/red.png and data/img/blue.png beside the data files."""
    data = tmp_path / "data"
    _png(data / "img" / "red.png")
    _png(data / "img" / "blue.png", colour=(0, 0, 255))
    return data


def test_every_row_format_gives_the_same_canonical_row(site, tmp_path):
    user, bot = {"role": "user", "content": f"<image>{Q}"}, {"role": "assistant", "content": A}
    rows = {
        # LLaMA-Factory sharegpt (from/value) + images
        "lf_sharegpt": {
            "conversations": [{"from": "human", "value": f"<image>{Q}"}, {"from": "gpt", "value": A}],
            "images": ["img/red.png"],
        },
        # LLaMA-Factory alpaca + images
        "lf_alpaca": {"instruction": f"<image>{Q}", "input": "", "output": A, "images": ["img/red.png"]},
        # ms-swift messages + images as strings, as {"path": ...}, and without the <image> tag
        "swift": {"messages": [user, bot], "images": ["img/red.png"]},
        "swift_path": {"messages": [user, bot], "images": [{"path": "img/red.png"}]},
        "swift_untagged": {"messages": [{"role": "user", "content": Q}, bot], "images": "img/red.png"},
    }
    got = {}
    for name, row in rows.items():
        ds, stats = _load(_jsonl(site / f"{name}.jsonl", [row]), tmp_path)
        assert set(ds.column_names) == {"messages", "tools", "images", "videos"}, name
        assert (stats.image_rows, stats.images) == (1, 1)
        got[name] = _canon(ds[0])
    # LLaMA-Factory dataset_info.json: a sharegpt entry with role/content tags and an images column
    # named `pics`; relative paths follow the registry's folder (LF's dataset_dir), not the file's
    (site / "sub").mkdir()
    (site / "sub" / "mllm.json").write_text(json.dumps([{"messages": [user, bot], "pics": ["img/red.png"]}]))
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    entry = {"file_name": "sub/mllm.json", "formatting": "sharegpt", "tags": tags}
    entry["columns"] = {"messages": "messages", "images": "pics"}
    (site / "dataset_info.json").write_text(json.dumps({"mllm_demo": entry}))
    ds, _ = _load("mllm_demo", tmp_path, dataset_dir=str(site))
    got["lf_registry"] = _canon(ds[0])
    want = {"turns": [("user", f"<image>{Q}"), ("assistant", A)], "images": [str(site / "img/red.png")]}
    want["videos"] = []
    for name, canon in got.items():
        assert canon == want, name


def test_text_datasets_are_unchanged_and_mix_with_vision_ones(site, tmp_path):
    text = _jsonl(
        site / "text.jsonl",
        [
            {
                "messages": [
                    {"role": "user", "content": "<image> is a tag"},
                    {"role": "assistant", "content": "ok"},
                ]
            }
        ],
    )
    ds, _ = _load(text, tmp_path)
    assert ds.column_names == ["messages", "tools"]  # no images column, the stray tag is plain text
    assert ds[0]["messages"][0]["content"] == "<image> is a tag"
    pics = _jsonl(
        site / "pics.jsonl",
        [
            {
                "messages": [{"role": "user", "content": f"<image>{Q}"}, {"role": "assistant", "content": A}],
                "images": ["img/red.png"],
            }
        ],
    )
    for strategy in ("concat", "interleave_over"):
        mixed, _ = _load(f"{pics},{text}", tmp_path, mix_strategy=strategy)
        assert sorted(len(r["images"]) for r in mixed) == [0, 1]


def test_placeholder_mismatch_is_one_line_naming_file_row_and_field(site, tmp_path):
    good = {
        "messages": [{"role": "user", "content": f"<image>{Q}"}, {"role": "assistant", "content": A}],
        "images": ["img/red.png"],
    }
    two_tags = {
        "messages": [{"role": "user", "content": f"<image><image>{Q}"}, {"role": "assistant", "content": A}],
        "images": ["img/red.png"],
    }
    path = _jsonl(site / "bad.jsonl", [good, two_tags])
    msg = _error(lambda: _load(path, tmp_path))
    assert msg.startswith(f'{path}:2: "images"') and "1 file(s)" in msg and "2 <image>" in msg
    video_tag = {
        "messages": [{"role": "user", "content": f"<video>{Q}"}, {"role": "assistant", "content": A}]
    }
    vpath = _jsonl(site / "bad_video.jsonl", [good, video_tag])
    msg = _error(lambda: _load(vpath, tmp_path))
    assert msg.startswith(f'{vpath}:2: "videos"') and "0 file(s)" in msg
    ds, stats = _load(path, tmp_path, skip_bad_rows=True)
    assert len(ds) == 1 and stats.num_bad == 1 and f"{path}:2" in stats.bad_examples[0]


def test_missing_and_corrupt_images_name_file_and_row(site, tmp_path):
    (site / "img" / "broken.png").write_bytes(b"not a png at all")
    noise = Image.frombytes("RGB", (64, 64), os.urandom(64 * 64 * 3))
    noise.save(site / "img" / "noise.png")
    whole = (site / "img" / "noise.png").read_bytes()
    (site / "img" / "cut.png").write_bytes(whole[: len(whole) // 2])  # the header opens, the pixels do not

    def row(p):
        return {
            "messages": [{"role": "user", "content": f"<image>{Q}"}, {"role": "assistant", "content": A}],
            "images": [p],
        }

    rows = [row("img/red.png"), row("img/gone.png"), row("img/broken.png"), row("img/cut.png")]
    path = _jsonl(site / "d.jsonl", rows)
    msg = _error(lambda: _load(path, tmp_path))
    assert (
        msg.startswith(f'{path}:2: "images[0]"') and str(site / "img/gone.png") in msg and "not found" in msg
    )
    ds, stats = _load(path, tmp_path, skip_bad_rows=True)
    assert len(ds) == 1 and stats.num_bad == 3
    assert "not a readable image" in stats.bad_examples[1] and f"{path}:3" in stats.bad_examples[1]
    assert "not a readable image" in stats.bad_examples[2] and f"{path}:4" in stats.bad_examples[2]
    report = check_dataset(path, "chat", cache_dir=str(tmp_path / "cache"))
    assert report["media"] == {"image_rows": 1, "images": 1, "video_rows": 0, "videos": 0}
    text = format_report(report)
    assert "rows with images: 1 (1 images)" in text and "bad: " in text and f"{path}:3" in text


def test_media_forms_that_are_refused(site, tmp_path):
    for field, value, words in [
        ("images", [{"bytes": "iVBOR"}], "embedded image bytes"),  # ms-swift's bytes form
        ("images", ["https://x.org/a.png"], "URLs are not downloaded"),
        ("images", [3], 'must be a file path or {"path": PATH}'),
        ("videos", [["f1.png", "f2.png"]], "put the frames of a video in a folder"),  # LF's frame lists
    ]:
        tag = "<image>" if field == "images" else "<video>"
        turns = [{"role": "user", "content": f"{tag}{Q}"}, {"role": "assistant", "content": A}]
        path = _jsonl(site / "s.jsonl", [{"messages": turns, field: value}])
        msg = _error(lambda p=path: _load(p, tmp_path))
        assert msg.startswith(f'{path}:1: "{field}[0]"') and words in msg


def test_image_content_parts_are_refused_not_dropped(site, tmp_path):
    parts = [{"type": "image_url", "image_url": {"url": "img/red.png"}}, {"type": "text", "text": Q}]
    path = _jsonl(
        site / "parts.jsonl",
        [{"messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": A}]}],
    )
    msg = _error(lambda: _load(path, tmp_path))
    assert (
        msg.startswith(f'{path}:1: "messages[0].content" must be text')
        and "a content part of type image_url" in msg
    )


def test_image_dir_resolution(site, tmp_path, monkeypatch):
    elsewhere = tmp_path / "pictures"
    _png(elsewhere / "red.png")
    row = {
        "messages": [{"role": "user", "content": f"<image>{Q}"}, {"role": "assistant", "content": A}],
        "images": ["red.png"],
    }
    path = _jsonl(site / "rel.jsonl", [row])
    assert "not found" in _error(lambda: _load(path, tmp_path))  # data/red.png does not exist
    ds, _ = _load(path, tmp_path, image_dir=str(elsewhere))
    assert ds[0]["images"] == [str(elsewhere / "red.png")]
    row["images"] = ["img/red.png"]  # without --image_dir: the data file's folder
    ds, _ = _load(_jsonl(site / "rel2.jsonl", [row]), tmp_path)
    assert ds[0]["images"] == [str(site / "img/red.png")]
    monkeypatch.chdir(tmp_path)  # found only from the working directory: taken from there (LF)
    row["images"] = ["pictures/red.png"]
    ds, _ = _load(_jsonl(site / "cwd.jsonl", [row]), tmp_path)
    assert ds[0]["images"] == [str(elsewhere / "red.png")]
    row["images"] = [str(site / "img/blue.png")]  # absolute paths stay as they are
    ds, _ = _load(_jsonl(site / "abs.jsonl", [row]), tmp_path, image_dir=str(elsewhere))
    assert ds[0]["images"] == [str(site / "img/blue.png")]


def test_pixel_bounds_keep_the_aspect(tmp_path):
    big = vision.load_image(
        _png(tmp_path / "big.png", (1000, 1000)), max_pixels=768 * 768, min_pixels=32 * 32
    )
    assert big.size[0] * big.size[1] <= 768 * 768 and big.size[0] == big.size[1] >= 760
    wide = vision.load_image(_png(tmp_path / "wide.png", (2000, 500)), max_pixels=768 * 768)
    assert wide.size[0] * wide.size[1] <= 768 * 768 and abs(wide.size[0] / wide.size[1] - 4) < 0.02
    tiny = vision.load_image(_png(tmp_path / "tiny.png", (10, 20)), max_pixels=768 * 768, min_pixels=32 * 32)
    assert tiny.size[0] * tiny.size[1] >= 32 * 32 and abs(tiny.size[1] / tiny.size[0] - 2) < 0.1
    same = vision.load_image(_png(tmp_path / "mid.png", (100, 50)), max_pixels=768 * 768, min_pixels=32 * 32)
    assert same.size == (100, 50)


def _gif(path, n, ms):
    frames = [Image.new("RGB", (40, 40), (i * 10, 0, 0)) for i in range(n)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=ms, loop=0)
    return str(path)


def test_gif_video_sampling_honours_fps_and_maxlen(tmp_path):
    gif = _gif(tmp_path / "v.gif", 20, 100)  # 20 frames of 0.1 s: a 2 s video
    frames = vision.load_video(gif, fps=2.0, maxlen=128)
    assert len(frames) == 4  # 2 s x 2 fps
    assert [f.getpixel((0, 0))[0] for f in frames] == [0, 60, 130, 190]  # frames 0, 6, 13, 19
    assert len(vision.load_video(gif, fps=5.0, maxlen=128)) == 10
    assert len(vision.load_video(gif, fps=100.0, maxlen=128)) == 20  # never more than it has
    assert len(vision.load_video(gif, fps=5.0, maxlen=3)) == 3
    small = vision.load_video(gif, fps=1.0, max_pixels=20 * 20)
    assert all(f.size == (20, 20) and f.mode == "RGB" for f in small)


def test_frame_folder_and_containers_without_pyav(tmp_path):
    for i in range(10):
        _png(tmp_path / "clip" / f"{i:03d}.png", colour=(i * 20, 0, 0))
    frames = vision.load_video(str(tmp_path / "clip"), fps=2.0, maxlen=4)
    assert [f.getpixel((0, 0))[0] for f in frames] == [0, 60, 120, 180]  # frames 0, 3, 6, 9
    mp4 = tmp_path / "v.mp4"
    mp4.write_bytes(b"\x00" * 64)
    try:
        import av  # noqa: F401
    except ImportError:
        msg = _error(lambda: vision.load_video(str(mp4), row="d.jsonl:3"))
        assert msg.startswith(f"d.jsonl:3: video {mp4}: ") and "pip install av" in msg


def test_video_rows_and_other_data_kinds(site, tmp_path):
    _gif(site / "clip.gif", 6, 200)
    for i in range(3):
        _png(site / "frames" / f"{i}.png")
    row = {
        "messages": [{"role": "user", "content": f"<video><video>{Q}"}, {"role": "assistant", "content": A}],
        "videos": ["clip.gif", "frames"],
    }
    ds, stats = _load(_jsonl(site / "v.jsonl", [row]), tmp_path)
    assert ds[0]["videos"] == [str(site / "clip.gif"), str(site / "frames")] and ds[0]["images"] == []
    assert (stats.video_rows, stats.videos) == (1, 2)
    # LLaMA-Factory's pairwise rows (dpo) with images: the tag is counted with either side
    pref = {
        "conversations": [{"from": "human", "value": Q}],
        "chosen": {"from": "gpt", "value": A},
        "rejected": {"from": "gpt", "value": "blue"},
        "images": ["img/red.png"],
    }
    ds, _ = _load(_jsonl(site / "p.jsonl", [pref]), tmp_path, kind="preference")
    assert ds[0]["prompt"][0]["content"] == f"<image>{Q}" and ds[0]["images"] == [str(site / "img/red.png")]
    prompt = {
        "messages": [{"role": "user", "content": f"<image>{Q}"}],
        "images": ["img/blue.png"],
        "answer": "blue",
    }
    ds = list(iter_rows_streaming(_jsonl(site / "g.jsonl", [prompt]), "prompt"))
    assert ds[0]["images"] == [str(site / "img/blue.png")] and ds[0]["answer"] == "blue"


def test_validate_row_checks_a_canonical_row(site):
    row = {"messages": [{"role": "user", "content": f"<image>{Q}"}], "images": [str(site / "img/red.png")]}
    vision.validate_row(row)
    row["images"] *= 2
    with pytest.raises(DataError, match='"images" lists 2 file'):
        vision.validate_row(row, where=("x.jsonl", 4))


def test_rows_reach_the_stage_as_canonical_rows(site, tmp_path, monkeypatch):
    """`train sft`'s data loading (pipeline.load_data, --image_dir, --val_size, --max_samples)
    hands the stage's tokeniser the canonical rows, images column included."""
    from types import SimpleNamespace

    import datasets

    from lmforge.pipeline import load_data, resolve_train_config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf"))
    rows = [
        {
            "messages": [{"role": "user", "content": f"{Q} {i}"}, {"role": "assistant", "content": A}],
            "images": ["red.png"],
        }
        for i in range(6)
    ]
    path = _jsonl(site / "train.jsonl", rows)
    argv = ["--dataset", path, "--image_dir", str(site / "img"), "--val_size", "2", "--max_samples", "5"]
    cfg = resolve_train_config("sft", argv)[1]
    train, val = load_data(SimpleNamespace(cfg=cfg, stage="sft", stats={}), "chat")
    assert (len(train), len(val)) == (3, 2)
    for row in [*train, *val]:
        assert row["images"] == [str(site / "img" / "red.png")] and row["videos"] == []
        assert row["messages"][0]["content"].startswith(f"<image>{Q}")


def test_flags_and_reference_aliases():
    from lmforge.pipeline import resolve_train_config

    cfg = resolve_train_config("sft", ["--dataset", "d.jsonl"])[1]
    assert (cfg["image_max_pixels"], cfg["image_min_pixels"]) == (768 * 768, 32 * 32)
    assert (cfg["video_fps"], cfg["video_maxlen"]) == (2.0, 128)
    for flags, key, value in [
        (["--rescale_image", "480000"], "image_max_pixels", 480000),  # ms-swift
        (["--image_resolution", "262144"], "image_max_pixels", 262144),  # LLaMA-Factory 0.9.1+
        (["--image_resolution", "512"], "image_max_pixels", 512 * 512),  # LLaMA-Factory 0.9.0: a side
        (["--video_resolution", "16384"], "video_max_pixels", 16384),
    ]:
        assert resolve_train_config("sft", ["--dataset", "d.jsonl", *flags])[1][key] == value, flags
