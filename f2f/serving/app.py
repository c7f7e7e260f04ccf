"""The typed app builder that Serve config files point at (`import_path: f2f.serving.app:build_app`).

Rules of `build_app(args)`:

- `args` is validated by `AppArgs` (unknown keys rejected); `args.config` is
  an f2f config mapping (as a config file holds, e.g. `{profile: tiny}`),
  validated by `f2f.config.config_from_dict`. Any error is an `InvalidConfig`
  naming the field (`args.vlm_num_cpus`, `config.video.num_frames`).
- With a profile, its tiny checkpoints are built (first use) and its folder
  is checked here, once, before any replica loads weights.
- Deployment options come from the args: fractional CPUs (a replica asks for
  1 CPU by default, and an oversubscribed app hangs without a word), GPUs for
  the generator, one ongoing request per generator replica.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ray import serve
from ray.serve import Application

from f2f.backends import prepare_models
from f2f.config import F2FConfig, config_from_dict
from f2f.errors import InvalidConfig
from f2f.serving.generator_deployment import GeneratorDeployment
from f2f.serving.ingress import Ingress
from f2f.serving.vlm_deployment import VLMDeployment


class AppArgs(BaseModel):
    """The arguments of `build_app`: the f2f config and the resources of each deployment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: dict[str, Any] = Field(default_factory=dict, description="An f2f config mapping, e.g. {profile: tiny}.")
    vlm_num_cpus: float = Field(0.25, gt=0, description="CPUs reserved per VLM replica (fractions allowed).")
    generator_num_cpus: float = Field(0.25, gt=0, description="CPUs reserved per generator replica.")
    generator_num_gpus: float = Field(0, ge=0, description="GPUs per generator replica (0: CPU).")
    ingress_num_cpus: float = Field(0.25, gt=0, description="CPUs reserved per ingress replica.")
    max_n: int = Field(4, ge=1, le=64, description="Largest `n` (seeds per edit) a request may ask for.")


def parse_args(args: dict[str, Any] | None) -> tuple[AppArgs, F2FConfig]:
    """Validated args and the f2f config they hold; InvalidConfig names the field."""
    try:
        parsed = AppArgs.model_validate(args or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        field = "args." + ".".join(str(p) for p in err["loc"])
        rule = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise InvalidConfig(field, err.get("input"), rule) from None
    return parsed, config_from_dict(dict(parsed.config), origin="config.")


def build_app(args: dict[str, Any] | None = None) -> Application:
    """The f2f Serve application: Ingress -> (VLMDeployment, GeneratorDeployment)."""
    parsed, config = parse_args(args)
    prepare_models(config)
    vlm = serve.deployment(VLMDeployment, name="VLM", ray_actor_options={"num_cpus": parsed.vlm_num_cpus})
    generator = serve.deployment(
        GeneratorDeployment,
        name="Generator",
        max_ongoing_requests=1,
        ray_actor_options={"num_cpus": parsed.generator_num_cpus, "num_gpus": parsed.generator_num_gpus},
    )
    ingress = serve.deployment(serve.ingress()(Ingress), name="Ingress", ray_actor_options={"num_cpus": parsed.ingress_num_cpus})
    return ingress.bind(vlm.bind(config), generator.bind(config), config, parsed.max_n)


# --- Serve config files ---------------------------------------------------------------------


def run_config_file(path: str | Path) -> str:
    """`serve.run` every application of a Serve config file (Ray must be running); the base URL.

    Reads `http_options` (host, port) and `applications[]` (`name`, `route_prefix`,
    `import_path`, `args`); other keys are left to Ray.
    """
    data = _read_serve_config(Path(path))
    http = data.get("http_options") or {}
    host, port = http.get("host", "127.0.0.1"), http.get("port", 8000)
    serve.start(http_options={"host": host, "port": port})
    for app in data["applications"]:
        builder = _import_builder(app["import_path"])
        target = builder(app.get("args") or {}) if callable(builder) and not isinstance(builder, Application) else builder
        serve.run(target, name=app.get("name", "default"), route_prefix=app.get("route_prefix", "/"), blocking=False)
    return f"http://{host}:{port}"


def _read_serve_config(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidConfig("config", str(path), f"cannot read the Serve config file ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise InvalidConfig("config", str(path), f"not valid YAML ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("applications"), list) or not data["applications"]:
        raise InvalidConfig("applications", str(path), "a Serve config file needs a non-empty `applications` list")
    return data


def _import_builder(import_path: str) -> Any:
    import importlib

    module_name, _, attr = import_path.partition(":")
    if not attr:
        raise InvalidConfig("import_path", import_path, "must be `module:attribute`")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidConfig("import_path", import_path, f"cannot import it ({exc})") from None
