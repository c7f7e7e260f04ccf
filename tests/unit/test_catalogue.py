from __future__ import annotations

import hashlib
import json

import pytest
from click.testing import CliRunner

from f2f import catalogue as cat
from f2f import cli
from f2f.config import load_config
from f2f.errors import InvalidConfig

FILES = {"config.json": b'{"a": 1}\n', "weights/model.safetensors": b"\x00" * 4096, "tokenizer.json": b"{}"}


def entry(data: bytes, published: bool = True) -> dict:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest() if published else None}


@pytest.fixture
def fake_catalogue(monkeypatch) -> cat.Catalogue:
    """A catalogue with one small 'real' generator checkpoint (tokenizer.json's hash unpublished)."""
    files = {name: entry(data, published=name != "tokenizer.json") for name, data in FILES.items()}
    catalogue = cat.Catalogue.model_validate(
        {
            "checkpoints": {
                "gen": {"role": "generator", "dir": "Gen", "repo": "org/gen", "revision": "a" * 40, "files": files},
                "tiny-vlm": {"role": "vlm", "dir": "tiny-vlm", "tiny": "qwen2-vl"},
            },
            "profiles": {
                "real": {"description": "d", "generator": "gen", "vlm": "tiny-vlm", "config": {"video": {"num_frames": 25}}}
            },
        }
    )
    monkeypatch.setattr(cat, "load_catalogue", lambda: catalogue)
    monkeypatch.setattr(cli, "load_catalogue", lambda: catalogue)
    return catalogue


def stage_fake(folder, files=FILES):
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)


def test_packaged_catalogue_is_valid_and_has_the_tiny_profile():
    catalogue = cat.load_catalogue()
    assert catalogue.checkpoints_of("tiny")["generator"].tiny == "cogvideox-i2v"
    for ckpt in catalogue.checkpoints.values():
        # real: pinned (revision and files), or unpinned with the reason in its notes (staging refuses it)
        assert ckpt.tiny or (ckpt.repo and ((ckpt.revision and ckpt.files) or "NO REVISION" in ckpt.notes)), ckpt.dir
        if ckpt.role in ("generator", "lora"):
            assert ckpt.family, ckpt.dir
        if not ckpt.tiny:
            assert ckpt.licence and (ckpt.memory_gib or ckpt.role != "generator"), ckpt.dir
    from f2f.backends import TINY_BUILDERS
    from f2f.backends.video.i2v import FAMILIES

    assert {c.tiny for c in catalogue.checkpoints.values() if c.tiny} <= set(TINY_BUILDERS)
    assert {c.family for c in catalogue.checkpoints.values() if c.family} <= set(FAMILIES)


def test_an_unpinned_checkpoint_is_refused_by_stage(tmp_path):
    unpinned = [c for c in cat.load_catalogue().checkpoints.values() if not c.tiny and c.revision is None]
    for ckpt in unpinned:
        with pytest.raises(InvalidConfig, match="not pinned yet"):
            cat.stage_checkpoint(ckpt, tmp_path / ckpt.dir, download=lambda **_: pytest.fail("downloaded"))


def test_verify_a_complete_folder(fake_catalogue, tmp_path):
    stage_fake(tmp_path)
    report = cat.verify_folder(tmp_path, fake_catalogue.checkpoints["gen"])
    assert report.ok and not report.mismatched and not report.missing
    assert report.unverified == ["tokenizer.json"]


def test_verify_finds_missing_extra_and_corrupted_files(fake_catalogue, tmp_path):
    stage_fake(tmp_path)
    (tmp_path / "config.json").unlink()
    (tmp_path / "notes.txt").write_text("x")
    corrupted = bytearray(FILES["weights/model.safetensors"])
    corrupted[100] = 1  # same size, different content
    (tmp_path / "weights/model.safetensors").write_bytes(bytes(corrupted))
    report = cat.verify_folder(tmp_path, fake_catalogue.checkpoints["gen"])
    assert not report.ok
    assert report.missing == ["config.json"]
    assert report.extra == ["notes.txt"]
    assert len(report.mismatched) == 1 and report.mismatched[0].startswith("weights/model.safetensors: sha256")
    text = "\n".join(report.lines())
    assert "NOT OK" in text and "missing    config.json" in text


def test_verify_uses_the_manifest_for_unpublished_hashes(fake_catalogue, tmp_path):
    stage_fake(tmp_path)
    manifest = {"repo": "org/gen", "revision": "a" * 40, "files": {"tokenizer.json": entry(b"{}")}}
    (tmp_path / cat.MANIFEST).write_text(json.dumps(manifest))
    assert cat.verify_folder(tmp_path, fake_catalogue.checkpoints["gen"]).unverified == []
    (tmp_path / "tokenizer.json").write_bytes(b"[]")
    report = cat.verify_folder(tmp_path, fake_catalogue.checkpoints["gen"])
    assert report.mismatched and report.mismatched[0].startswith("tokenizer.json: sha256")


def test_stage_downloads_the_pinned_files_and_writes_the_manifest(fake_catalogue, tmp_path):
    calls = []

    def download(**kwargs):  # stands in for huggingface_hub.snapshot_download (no network here)
        calls.append(kwargs)
        stage_fake(kwargs["local_dir"])

    report = cat.stage_checkpoint(fake_catalogue.checkpoints["gen"], tmp_path / "Gen", download=download)
    assert report.ok and report.unverified == []
    assert calls[0]["repo_id"] == "org/gen" and calls[0]["revision"] == "a" * 40
    assert calls[0]["allow_patterns"] == sorted(FILES)
    manifest = json.loads((tmp_path / "Gen" / cat.MANIFEST).read_text())
    assert manifest["files"]["tokenizer.json"]["sha256"] == hashlib.sha256(b"{}").hexdigest()


def test_profile_preflight_names_the_folder_and_the_problem(fake_catalogue, tmp_path):
    with pytest.raises(InvalidConfig, match=r"Gen is not a complete org/gen@aaaaaaaaaaaa checkpoint \(folder missing\)"):
        cat.check_profile_folder(tmp_path, "real")
    stage_fake(tmp_path / "Gen", {k: v for k, v in FILES.items() if k != "config.json"})
    with pytest.raises(InvalidConfig) as info:
        cat.check_profile_folder(tmp_path, "real")
    assert info.value.field == "models_dir" and info.value.value == str(tmp_path / "Gen")
    assert "missing config.json" in info.value.rule and "org/gen" in info.value.rule
    (tmp_path / "Gen" / "config.json").write_bytes(b"{}")  # wrong size
    with pytest.raises(InvalidConfig, match="size 2 bytes, expected 9"):
        cat.check_profile_folder(tmp_path, "real")


def test_a_profile_sets_config_values_and_model_paths_under_the_users(fake_catalogue, tmp_path):
    config = load_config(overrides={"profile": "real", "models_dir": str(tmp_path)})
    assert config.video.num_frames == 25
    assert config.generator.model_path == tmp_path / "Gen" and config.vlm.model_path == tmp_path / "tiny-vlm"
    config = load_config(overrides={"profile": "real", "models_dir": str(tmp_path), "video": {"num_frames": 17}})
    assert config.video.num_frames == 17  # the user's value wins


def test_a_real_profile_needs_a_models_folder(fake_catalogue):
    with pytest.raises(InvalidConfig) as info:
        load_config(overrides={"profile": "real"})
    assert info.value.field == "models_dir" and "--models DIR" in info.value.rule


def test_tiny_profile_defaults_to_the_cache(tmp_path):
    config = load_config(overrides={"profile": "tiny", "cache_dir": str(tmp_path)})
    assert config.generator.model_path == tmp_path / "tiny" / "tiny-cogvideox-i2v"
    assert (config.video.width, config.video.height, config.vlm.backend) == (96, 64, "transformers")


def test_unknown_profile():
    with pytest.raises(InvalidConfig, match="unknown profile; known: tiny"):
        load_config(overrides={"profile": "huge"})


def test_cli_verify_exit_codes(fake_catalogue, tmp_path):
    stage_fake(tmp_path / "Gen")
    runner = CliRunner()
    ok = runner.invoke(cli.main, ["models", "verify", str(tmp_path)])
    assert ok.exit_code == 0 and "Gen: ok" in ok.output
    (tmp_path / "Gen" / "weights" / "model.safetensors").write_bytes(b"\x01" * 4096)
    bad = runner.invoke(cli.main, ["models", "verify", str(tmp_path), "--profile", "real"])
    assert bad.exit_code == 1 and "mismatched weights/model.safetensors" in bad.output


def test_cli_verify_checks_a_tiny_folder_against_what_its_builder_wrote(fake_catalogue, tmp_path, monkeypatch):
    from f2f import backends

    def builder(folder, seed):  # stands in for a tiny builder (torch): a few files
        stage_fake(folder, {"config.json": b"{}", "model.safetensors": bytes([seed]) * 64})

    monkeypatch.setattr(backends, "_tiny_builder", lambda kind: builder)
    monkeypatch.setattr(backends, "load_catalogue", lambda: fake_catalogue)
    backends.make_tiny(tmp_path, names=["tiny-vlm"])
    runner = CliRunner()
    fresh = runner.invoke(cli.main, ["models", "verify", str(tmp_path)])  # what the folder holds: tiny-vlm
    assert fresh.exit_code == 0, fresh.output
    assert [line for line in fresh.output.splitlines() if not line.startswith("sha256 ")] == [f"{tmp_path / 'tiny-vlm'}: ok"]
    one = runner.invoke(cli.main, ["models", "verify", str(tmp_path), "--checkpoint", "tiny-vlm"])
    assert one.exit_code == 0 and "extra" not in one.output
    profile = runner.invoke(cli.main, ["models", "verify", str(tmp_path), "--profile", "real"])  # Gen is not there
    assert profile.exit_code == 1 and f"{tmp_path / 'Gen'}: NOT OK: folder missing" in profile.output
    assert f"{tmp_path / 'tiny-vlm'}: ok" in profile.output
    (tmp_path / "tiny-vlm" / "model.safetensors").write_bytes(b"\x01" * 64)
    (tmp_path / "tiny-vlm" / "config.json").unlink()
    broken = runner.invoke(cli.main, ["models", "verify", str(tmp_path)])
    assert broken.exit_code == 1 and "missing    config.json" in broken.output
    assert "mismatched model.safetensors: sha256" in broken.output
    (tmp_path / "tiny-vlm" / cat.MANIFEST).unlink()
    unknown = runner.invoke(cli.main, ["models", "verify", str(tmp_path)])
    assert unknown.exit_code == 1 and f"missing    {cat.MANIFEST} (what `f2f models make-tiny` writes" in unknown.output


def test_cli_verify_of_a_missing_or_empty_folder_is_one_line(fake_catalogue, tmp_path):
    runner = CliRunner()
    missing = runner.invoke(cli.main, ["models", "verify", str(tmp_path / "nowhere")])
    assert (
        missing.exit_code == cli.EXIT_USAGE
        and missing.output == f"f2f: error: models_dir: folder missing (got '{tmp_path / 'nowhere'}')\n"
    )
    empty = runner.invoke(cli.main, ["models", "verify", str(tmp_path)])
    assert empty.exit_code == cli.EXIT_USAGE and "models_dir: holds no checkpoint folder of the catalogue" in empty.output


def test_cli_list_shows_profiles():
    result = CliRunner().invoke(cli.main, ["models", "list"])
    assert result.exit_code == 0 and "tiny:" in result.output and "built by f2f" in result.output
    lines = result.output.splitlines()
    generator = lines[lines.index(next(line for line in lines if line.startswith("wan2.2-ti2v-5b:"))) + 1]
    # role, folder, family, memory, licence, origin (this one is not pinned yet)
    assert generator.split()[:6] == ["generator", "Wan2.2-TI2V-5B-Diffusers", "wan", "21.3", "GiB", "Apache-2.0"]
    assert generator.endswith("@(not pinned)")
