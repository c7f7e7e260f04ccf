from __future__ import annotations

import pytest
from pydantic import ValidationError

from f2f.config import F2FConfig, config_from_dict, config_to_yaml, load_config
from f2f.errors import InvalidConfig


def test_defaults_are_the_papers_settings():
    config = F2FConfig()
    assert (config.video.num_frames, config.video.num_inference_steps, config.video.guidance_scale) == (49, 50, 6.0)
    assert (config.video.width, config.video.height) == (720, 480)
    assert config.selection.candidate_stride == 4
    assert config.num_seeds == 1


def test_every_field_has_a_description():
    def walk(model):
        for name, info in type(model).model_fields.items():
            assert info.description, f"{type(model).__name__}.{name} has no description"
            value = getattr(model, name)
            if hasattr(type(value), "model_fields"):
                walk(value)

    walk(F2FConfig())


@pytest.mark.parametrize(
    ("overrides", "field", "phrase"),
    [
        ({"video": {"num_frames": 50}}, "video.num_frames", "frame_step*k + 1"),
        ({"video": {"num_frames": 48}}, "video.num_frames", "49"),
        ({"video": {"width": 100}}, "video.width", "multiple of 16"),
        ({"video": {"guidance_scale": 0.5}}, "video.guidance_scale", "greater than or equal to 1"),
        ({"video": {"frames": 9}}, "video.frames", "unknown key"),
        ({"colour": "red"}, "colour", "unknown key"),
        ({"selection": {"candidate_stride": 49}}, "selection.candidate_stride", "smaller than video.num_frames"),
        ({"selection": {"on_unparseable": "guess"}}, "selection.on_unparseable", "last_candidate"),
        ({"input": {"alpha_background": [0, 0, 256]}}, "input.alpha_background", "0..255"),
        ({"seed": -1}, "seed", "greater than or equal to 0"),
        ({"num_seeds": 0}, "num_seeds", "greater than or equal to 1"),
        ({"video": "fast"}, "video", "valid dictionary"),
        ({"vlm": {"backend": "openai"}}, "vlm.base_url", "needs the endpoint"),
        ({"vlm": {"min_pixels": 5000, "max_pixels": 4000}}, "vlm.min_pixels", "must not exceed max_pixels"),
        ({"selection": {"collage_max_pixels": 2_000_000}}, "selection.collage_max_pixels", "vlm.max_pixels"),
        (
            {"generator": {"speed": {"cache": "first_block"}, "parallel": {"ulysses": 2}}},
            "generator.speed.cache",
            "ranks could disagree and hang",
        ),
    ],
)
def test_invalid_values_name_the_field_the_value_and_the_rule(overrides, field, phrase):
    with pytest.raises(InvalidConfig) as info:
        load_config(overrides=overrides)
    assert info.value.field == field
    assert phrase in info.value.rule
    assert field in str(info.value) and "got" in str(info.value)


def test_yaml_file_overrides_defaults_and_round_trips(tmp_path):
    path = tmp_path / "f2f.yaml"
    path.write_text("video:\n  num_frames: 25\n  num_inference_steps: 4\nselection:\n  retries: 0\n")
    config = load_config(path)
    assert (config.video.num_frames, config.video.num_inference_steps, config.selection.retries) == (25, 4, 0)
    assert config.video.guidance_scale == 6.0
    again = tmp_path / "again.yaml"
    again.write_text(config_to_yaml(config))
    assert load_config(again) == config


def test_overrides_apply_on_top_of_the_file(tmp_path):
    path = tmp_path / "f2f.yaml"
    path.write_text("video:\n  num_frames: 25\n")
    config = load_config(path, {"video": {"num_inference_steps": 3}, "seed": 5})
    assert (config.video.num_frames, config.video.num_inference_steps, config.seed) == (25, 3, 5)


@pytest.mark.parametrize(
    ("content", "phrase"),
    [("video: [unclosed", "not valid YAML"), ("- a\n- b\n", "mapping of sections")],
)
def test_bad_files_are_rejected_with_the_path(tmp_path, content, phrase):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    with pytest.raises(InvalidConfig, match=phrase) as info:
        load_config(path)
    assert info.value.value == str(path)


def test_errors_in_a_file_name_the_file(tmp_path):
    path = tmp_path / "f2f.yaml"
    path.write_text("video:\n  num_frame: 25\n")
    with pytest.raises(InvalidConfig) as info:
        load_config(path)
    assert info.value.field == f"{path}: video.num_frame"


def test_missing_file():
    with pytest.raises(InvalidConfig, match="cannot read"):
        load_config("/nonexistent/f2f.yaml")


def test_empty_file_means_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == F2FConfig()


def test_config_is_immutable():
    config = F2FConfig()
    with pytest.raises(ValidationError):
        config.video.num_frames = 9


def test_the_openai_token_can_come_from_an_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from f2f.backends.openai_vlm import OpenAIVLM
    from f2f.errors import BackendNotConfigured

    cfg = F2FConfig.model_validate({"vlm": {"backend": "openai", "base_url": "http://127.0.0.1:1/v1", "api_key_env": "F2F_T"}})
    monkeypatch.setenv("F2F_T", "sk-from-a-secret")
    assert OpenAIVLM.from_config(cfg.vlm).api_key == "sk-from-a-secret"
    monkeypatch.delenv("F2F_T")
    with pytest.raises(BackendNotConfigured, match="F2F_T is not set"):
        OpenAIVLM.from_config(cfg.vlm)


def test_api_key_and_api_key_env_exclude_each_other() -> None:
    data = {"vlm": {"backend": "openai", "base_url": "http://x/v1", "api_key": "k", "api_key_env": "K"}}
    with pytest.raises(InvalidConfig) as info:
        config_from_dict(data)
    assert info.value.field == "vlm.api_key_env"


def test_a_step_cache_decided_the_same_on_every_rank_may_run_split() -> None:
    assert load_config(overrides={"generator": {"speed": {"cache": "pyramid"}, "parallel": {"ulysses": 2}}})
    assert load_config(overrides={"generator": {"speed": {"cache": "first_block"}, "parallel": {"cfg": 2}}})
