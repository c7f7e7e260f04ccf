from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from fakes import ScriptedVLM, SyntheticGenerator
from PIL import Image
from scenes import moved, textured

from f2f import cli
from f2f.backends import Backends
from f2f.config import F2FConfig

SAMPLE = Path(cli.__file__).parent / "data" / "sample.png"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def small_config_file(tmp_path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text("generator: {family: cogvideox}\nvideo: {width: 96, height: 64, num_frames: 17, num_inference_steps: 2}\n")
    return path


def test_config_show_prints_the_defaults_as_yaml(runner):
    result = runner.invoke(cli.main, ["config", "show"])
    assert result.exit_code == 0
    assert F2FConfig.model_validate(yaml.safe_load(result.output)) == F2FConfig()


def test_config_show_applies_a_file(runner, small_config_file):
    result = runner.invoke(cli.main, ["config", "show", str(small_config_file)])
    assert result.exit_code == 0
    assert yaml.safe_load(result.output)["video"]["num_frames"] == 17


def test_config_show_masks_the_api_key(runner, tmp_path):
    path = tmp_path / "key.yaml"
    path.write_text("vlm: {backend: openai, base_url: 'http://127.0.0.1:1/v1', api_key: sk-secret-123}\n")
    result = runner.invoke(cli.main, ["config", "show", str(path)])
    assert result.exit_code == 0
    assert "sk-secret-123" not in result.output and "api_key: '**********'" in result.output


def test_edit_without_a_model_says_so_and_exits_2(runner, tmp_path):
    result = runner.invoke(cli.main, ["edit", str(SAMPLE), "make the sun set", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "no model is configured: use --profile" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["/nonexistent.png", "make it red"], "image: file not found"),
        (["{bad}", "make it red"], "not a readable image"),
        (["{sample}", ""], "text: the edit text must not be empty"),
        (["{sample}", "make it red", "--config", "{badconfig}"], "video.num_frames"),
        (["{sample}", "make it red", "--seed", "-3"], "--seed"),
        (["{sample}", "make it red", "--mask", "{bad}"], "mask: must be a PNG, WebP or TIFF file that decodes completely"),
        (["{sample}", "make it red", "--mask", "{sample}"], "mask: must have an alpha channel"),  # RGB: neither kind
        (["{sample}", "make it red", "--mask-mode", "blend"], "--mask-mode"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(runner, tmp_path, args, phrase):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"GIF89a not really")
    badconfig = tmp_path / "bad.yaml"
    badconfig.write_text("generator: {family: cogvideox}\nvideo: {num_frames: 50}\n")
    args = [a.format(bad=bad, sample=SAMPLE, badconfig=badconfig) for a in args]
    result = runner.invoke(cli.main, ["edit", *args, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert phrase in result.output
    assert "Traceback" not in result.output


def test_edit_writes_the_outputs_with_injected_backends(runner, tmp_path, monkeypatch, small_config_file):
    vlm, generator = ScriptedVLM(selections=["SELECTED: 2"]), SyntheticGenerator()
    monkeypatch.setattr(cli, "build_backends", lambda config: Backends(vlm, generator))
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.setenv(name, "0")  # restored after the test; the command must force it on
    out = tmp_path / "out"
    args = [
        "edit",
        str(SAMPLE),
        "make the sun set",
        "--out",
        str(out),
        "--config",
        str(small_config_file),
        "--seed",
        "11",
        "--save-frames",
    ]
    result = runner.invoke(cli.main, args)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "result.json").read_text())
    assert (data["seed"], data["selected_frame"], data["status"]) == (11, 8, "edited")
    assert Image.open(out / "edited.png").size == Image.open(SAMPLE).size
    assert sorted(p.name for p in (out / "candidates").iterdir()) == [f"frame_{i:03d}.png" for i in (4, 8, 12, 16)]
    assert os.environ["HF_HUB_OFFLINE"] == os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert (out / "video.mp4").exists() == (importlib.util.find_spec("imageio_ffmpeg") is not None)
    assert "status: edited" in result.output
    assert "generate step 2/2" in result.output  # progress on stderr (mixed in by the runner)


def test_the_console_script_runs():
    result = subprocess.run([sys.executable, "-m", "f2f.cli", "--help"], capture_output=True, text=True, check=True)
    assert "edit" in result.stdout and "config" in result.stdout


def test_importing_f2f_stays_light():
    code = (
        "import sys, f2f, f2f.cli, f2f.pipeline, f2f.caption, f2f.selection, f2f.canvas, f2f.imageio, f2f.backends\n"
        "print(' '.join(sorted({'torch', 'diffusers', 'transformers', 'vllm', 'ray', 'cv2'} & set(sys.modules))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_submit_to_a_service_that_is_not_there_is_one_line(runner, tmp_path):
    import socket

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    image = tmp_path / "a.png"
    Image.new("RGB", (8, 8)).save(image)
    result = runner.invoke(
        cli.main, ["submit", str(image), "make it red", "--out", str(tmp_path / "o"), "--url", f"http://127.0.0.1:{port}"]
    )
    assert result.exit_code == cli.EXIT_USAGE
    assert f"cannot reach the f2f service at http://127.0.0.1:{port}" in result.output and "Traceback" not in result.output


def test_submit_needs_an_existing_image(runner, tmp_path):
    result = runner.invoke(cli.main, ["submit", str(tmp_path / "missing.png"), "x", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_serve_refuses_a_metrics_port_in_use_in_one_line(runner, monkeypatch):
    import socket

    if importlib.util.find_spec("ray") is None:
        pytest.skip("f2f serve needs Ray")
    for key in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED"):
        monkeypatch.setenv(key, os.environ.get(key, "0"))  # f2f serve sets these; undone after the test
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        result = runner.invoke(cli.main, ["serve", "--metrics-port", str(port)])
    assert result.exit_code == cli.EXIT_USAGE, result.output
    assert "--metrics-port: the port is in use" in result.output and str(port) in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


@pytest.fixture
def drifted(tmp_path) -> tuple[Path, Path]:
    """A textured source and an edit of it whose camera moved 8 px right and 5 px up."""
    source, edited = tmp_path / "source.png", tmp_path / "edited.png"
    textured(0).save(source)
    moved(textured(0), (8.0, -5.0)).save(edited)
    return edited, source


def test_align_writes_the_aligned_image_and_prints_the_record(runner, tmp_path, drifted):
    out = tmp_path / "new" / "aligned.png"
    result = runner.invoke(cli.main, ["align", *map(str, drifted), "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert (record["applied"], record["reason"], record["mode"], record["resized_from"]) == (True, None, "auto", None)
    # OpenCV's fixed-point warp makes the same pixels on any CPU; the fit's error is hundredths of a pixel.
    assert abs(record["shift_px"][0] - 8.0) < 0.5 and abs(record["shift_px"][1] + 5.0) < 0.5
    assert record["error_after"] < record["error_before"] and record["out"] == str(out)
    assert Image.open(out).size == (320, 240)


def test_align_resizes_an_edit_of_another_size_and_says_so(runner, tmp_path, drifted):
    edited, source = drifted
    Image.open(edited).resize((640, 480), Image.Resampling.LANCZOS).save(edited)
    out = tmp_path / "aligned.jpg"
    result = runner.invoke(cli.main, ["align", str(edited), str(source), "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["applied"] and record["resized_from"] == [640, 480]
    assert abs(record["shift_px"][0] - 8.0) < 0.5 and abs(record["shift_px"][1] + 5.0) < 0.5  # resampled twice: blur only
    assert Image.open(out).format == "JPEG" and Image.open(out).size == (320, 240)


@pytest.mark.parametrize(("edit", "args", "reason"), [("flat", [], "featureless"), ("drifted", ["--mode", "off"], "off")])
def test_align_not_applied_writes_the_edit_as_it_is_and_says_why(runner, tmp_path, drifted, edit, args, reason):
    edited, source = drifted
    if edit == "flat":
        Image.new("RGB", (320, 240), (40, 90, 160)).save(edited)
    out = tmp_path / "aligned.png"
    result = runner.invoke(cli.main, ["align", str(edited), str(source), "--out", str(out), *args])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert (record["applied"], record["reason"]) == (False, reason)
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(edited)))


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["{missing}", "{source}"], "edited: file not found"),
        (["{edited}", "{missing}"], "source: file not found"),
        (["{bad}", "{source}"], "edited: not a readable image"),
        (["{other_shape}", "{source}"], "edited: must have the source's aspect ratio (320x240)"),
        (["{edited}", "{source}", "--mode", "sometimes"], "Invalid value for '--mode'"),
        (["{edited}", "{source}", "--config", "{badconfig}"], "align.max_zoom"),
        (["{edited}", "{source}", "--out", "{tmp}/aligned.gif"], "--out: must end in .png, .jpg, .jpeg, .webp"),
    ],
    ids=["missing-edit", "missing-source", "not-an-image", "aspect-ratio", "mode", "config", "out-format"],
)
def test_align_bad_input_exits_2_with_one_clear_line(runner, tmp_path, drifted, args, phrase):
    edited, source = drifted
    (tmp_path / "bad.png").write_bytes(b"GIF89a not really")
    Image.new("RGB", (300, 300)).save(tmp_path / "square.png")
    (tmp_path / "bad.yaml").write_text("align: {max_zoom: 0.5}\n")
    names = {"missing": tmp_path / "nope.png", "source": source, "edited": edited, "bad": tmp_path / "bad.png",
             "other_shape": tmp_path / "square.png", "badconfig": tmp_path / "bad.yaml", "tmp": tmp_path}  # fmt: skip
    args = [a.format(**names) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "aligned.png")]
    result = runner.invoke(cli.main, ["align", *args])
    assert result.exit_code == 2, result.output
    assert phrase in result.output and "Traceback" not in result.output
    assert not (tmp_path / "aligned.png").exists() and not (tmp_path / "aligned.gif").exists()


def test_keys_new_in_a_missing_folder_says_so_in_one_line(runner, tmp_path):
    path = tmp_path / "missing" / "dir" / "keys.yaml"
    result = runner.invoke(cli.main, ["keys", "new", "a", "--file", str(path)])
    assert result.exit_code == cli.EXIT_USAGE, result.output
    assert f"--file: its folder {path.parent} is missing" in result.output and str(path) in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not path.parent.exists()


def test_eval_asked_for_clip_without_a_clip_folder_says_so_in_one_line(runner, tmp_path):
    result = runner.invoke(
        cli.main, ["eval", str(tmp_path), "--edits", str(tmp_path), "--out", str(tmp_path / "o"), "--metrics", "clip"]
    )
    assert result.exit_code == cli.EXIT_USAGE, result.output
    assert "--clip: --metrics clip needs --clip DIR, a staged CLIP checkpoint folder" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def _not_clip(folder: Path) -> Path:
    """A folder shaped like a checkpoint, but of another model."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    for name in ("model.safetensors", "preprocessor_config.json", "tokenizer.json"):
        (folder / name).write_text("{}")
    return folder


@pytest.mark.parametrize(
    ("folder", "phrase"),
    [
        (lambda tmp: tmp / "nowhere", "folder missing"),
        (lambda tmp: tmp, "missing config.json, model.safetensors or pytorch_model.bin, preprocessor_config.json"),
        (lambda tmp: _not_clip(tmp / "qwen"), "is not a CLIP checkpoint: its config.json has model_type 'qwen2_vl'"),
    ],
    ids=["missing", "empty", "another-model"],
)
def test_eval_with_a_clip_folder_that_is_not_clip_says_what_is_missing(runner, tmp_path, folder, phrase):
    clip = folder(tmp_path)
    args = [
        "eval",
        str(tmp_path),
        "--edits",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
        "--metrics",
        "clip",
        "--clip",
        str(clip),
    ]
    result = runner.invoke(cli.main, args)
    assert result.exit_code == cli.EXIT_USAGE, result.output
    assert result.output.startswith("f2f: error: --clip: ") and phrase in result.output
    assert str(clip) in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("where", ["flag", "file"])
def test_serve_refuses_a_port_in_use_in_one_line_before_ray_starts(runner, monkeypatch, tmp_path, where):
    import socket

    if importlib.util.find_spec("ray") is None:
        pytest.skip("f2f serve needs Ray")
    import ray

    monkeypatch.setattr(ray, "init", lambda *args, **kwargs: pytest.fail("Ray started"))
    for key in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED"):
        monkeypatch.setenv(key, os.environ.get(key, "0"))  # f2f serve sets these; undone after the test
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "serve.yaml"
        config.write_text(yaml.safe_dump({"http_options": {"port": port}, "applications": [{"import_path": "x:y"}]}))
        args = ["--port", str(port)] if where == "flag" else [str(config)]
        result = runner.invoke(cli.main, ["serve", *args, "--metrics-port", "0"])
    assert result.exit_code == cli.EXIT_USAGE, result.output
    field = "--port" if where == "flag" else f"{config}: http_options.port"
    assert (
        f"{field}: the port is in use on 127.0.0.1" in result.output and f"give another with --port (got {port})" in result.output
    )
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_a_models_folder_that_does_not_exist_is_a_typo_not_a_new_folder(runner, tmp_path, monkeypatch):
    from f2f import backends

    built: list[Path] = []
    monkeypatch.setattr(backends, "_build_tiny", lambda ckpt, folder, seed: built.append(folder) or folder.mkdir(parents=True))
    typo = tmp_path / "modles"
    args = ["edit", str(SAMPLE), "make it red", "--profile", "tiny", "--models", str(typo), "--out", str(tmp_path / "o")]
    result = runner.invoke(cli.main, args)
    assert result.exit_code == cli.EXIT_USAGE, result.output
    assert "models_dir: folder missing: give an existing folder" in result.output and str(typo) in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 2  # "loading models", the error
    assert not typo.exists() and built == []


def test_a_tiny_profile_builds_under_the_cache_dir_even_when_it_is_new(tmp_path):
    from f2f.backends import check_models_dir
    from f2f.config import load_config

    check_models_dir(load_config(overrides={"profile": "tiny", "cache_dir": str(tmp_path / "new")}))  # cache_dir/tiny
    given = load_config(overrides={"profile": "tiny", "cache_dir": str(tmp_path), "models_dir": str(tmp_path / "a" / "b")})
    check_models_dir(given)  # under cache_dir: f2f's own
    (tmp_path / "real").mkdir()
    check_models_dir(load_config(overrides={"profile": "tiny", "models_dir": str(tmp_path / "real")}))
