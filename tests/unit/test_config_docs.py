"""The config schema as documentation: unknown keys name the closest real key, `f2f config show --describe` and
`f2f config explain` print every key from the schema, and `f2f bulk --help` / `f2f eval --help` show the run's
options."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from f2f import cli
from f2f.config import REQUIRED, describe, load_config
from f2f.errors import InvalidConfig

KEYS = {doc.key: doc for doc in describe()}


@pytest.mark.parametrize(
    ("overrides", "field", "rule"),
    [
        ({"video": {"steps": 10}}, "video.steps", "unknown key (did you mean video.num_inference_steps?)"),
        ({"video": {"guidance": 3}}, "video.guidance", "unknown key (did you mean video.guidance_scale?)"),
        ({"generator": {"vae_slice": True}}, "generator.vae_slice", "unknown key (did you mean generator.vae_slicing?)"),
        ({"vlm": {"dtyp": "auto"}}, "vlm.dtyp", "unknown key (did you mean vlm.dtype?)"),  # its own section's first
        ({"video": {"candidate_stride": 2}}, "video.candidate_stride", "unknown key (did you mean selection.candidate_stride?)"),
        (
            {"generator": {"lora": [{"path": "a.safetensors", "scal": 2}]}},
            "generator.lora.0.scal",
            "unknown key (did you mean generator.lora[].scale?)",
        ),
        ({"mask": {"zzz": 1}}, "mask.zzz", "unknown key; known here: mode, strength, dilate_px, feather_px"),
    ],
)
def test_an_unknown_key_names_the_closest_real_one(overrides, field, rule):
    with pytest.raises(InvalidConfig) as info:
        load_config(overrides=overrides)
    assert (info.value.field, info.value.rule) == (field, rule)


def test_an_unknown_key_in_a_file_is_one_line_with_exit_2(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("video: {steps: 10}\n")
    result = CliRunner().invoke(cli.main, ["config", "show", str(path)])
    assert result.exit_code == 2
    assert result.output == f"f2f: error: {path}: video.steps: unknown key (did you mean video.num_inference_steps?) (got 10)\n"


def test_describe_reads_types_choices_limits_and_defaults_from_the_schema():
    tiling, slicing, steps = KEYS["generator.vae_tiling"], KEYS["generator.vae_slicing"], KEYS["video.num_inference_steps"]
    assert (tiling.kind, tiling.choices, tiling.default) == ("bool | str", (True, False, "auto"), False)
    assert (slicing.kind, slicing.choices) == ("bool", ())  # no auto: only vae_tiling takes it
    assert (steps.kind, steps.limits, steps.default) == ("int | null", (">= 1", "<= 1000"), None)
    assert KEYS["vlm.api_key_env"].limits == ("matches ^[A-Za-z_][A-Za-z0-9_]*$",)
    assert KEYS["input.alpha_background"].kind == "list of 3 int"
    assert KEYS["generator.lora[].path"].default == REQUIRED and KEYS["generator.speed"].kind == "section"
    assert all(doc.description for doc in KEYS.values())


def test_config_show_describe_prints_every_key_with_its_value_here(tmp_path):
    path = tmp_path / "f2f.yaml"
    path.write_text("mask: {strength: 0.5}\n")
    result = CliRunner().invoke(cli.main, ["config", "show", str(path), "--describe"])
    assert result.exit_code == 0, result.output
    heads = [line for line in result.output.splitlines() if not line.startswith(" ")]
    assert [line.split(":")[0] for line in heads] == list(KEYS)
    assert "mask.strength: float, > 0, <= 1; default 1.0 (here: 0.5)" in heads
    assert "generator.vae_tiling: bool | str, one of true, false, auto; default false" in heads
    assert "kv_cache_memory_gib: float | null, > 0; default null\n    vllm: memory for the KV cache in GiB" in result.output


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("vlm.api_key_env", ["vlm.api_key_env"]),
        ("generator.parallel", ["generator.parallel", "generator.parallel.cfg", "generator.parallel.ulysses"]),
        ("generator.lora", ["generator.lora", "generator.lora[].path", "generator.lora[].scale", "generator.lora[].target"]),
    ],
)
def test_config_explain_prints_a_key_or_a_section(key, expected):
    result = CliRunner().invoke(cli.main, ["config", "explain", key])
    assert result.exit_code == 0, result.output
    assert [line.split(":")[0] for line in result.output.splitlines() if not line.startswith(" ")] == expected


@pytest.mark.parametrize(
    ("key", "hint"),
    [("video.steps", "did you mean video.num_inference_steps?"), ("qqq.zzz", "`f2f config explain` lists every key")],
)
def test_config_explain_of_an_unknown_key_is_one_line_with_exit_2(key, hint):
    result = CliRunner().invoke(cli.main, ["config", "explain", key])
    assert result.exit_code == 2
    assert result.output == f"f2f: error: KEY: unknown config key ({hint}) (got {key!r})\n"


@pytest.mark.parametrize(
    ("command", "options", "subcommands"),
    [
        ("bulk", ["--out", "--profile", "--block-rows", "--max-retries", "--input-root", "--generators"], ["from-posedit"]),
        ("eval", ["--out", "--edits", "--metrics", "--clip", "--size", "--lpips-input", "--weights"], ["install-weights"]),
    ],
)
def test_bulk_and_eval_help_show_the_run_options(command, options, subcommands):
    result = CliRunner().invoke(cli.main, [command, "--help"])
    assert result.exit_code == 0, result.output
    listed = [line.split()[0] for line in result.output.splitlines() if line.startswith("  -")]
    assert set(options) <= set(listed) and "--help" in listed
    assert all(f"  {name} " in result.output for name in subcommands)


def test_a_bare_off_in_yaml_is_refused_with_the_quoting_hint(tmp_path: Path) -> None:
    config = tmp_path / "f2f.yaml"
    config.write_text("align:\n  mode: off\n")  # YAML 1.1: a bare off is false
    with pytest.raises(InvalidConfig) as info:
        load_config(config)
    assert info.value.field.endswith("align.mode") and info.value.value is False
    assert "write 'off' in quotes" in info.value.rule
    config.write_text("align:\n  mode: 'off'\n")
    assert load_config(config).align.mode == "off"
