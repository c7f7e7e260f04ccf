"""The VLM backends: vLLM in process (`vllm_vlm`), transformers (`hf_vlm`), an OpenAI-compatible endpoint (`openai_vlm`)."""
