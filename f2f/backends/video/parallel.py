"""One CogVideoX transformer across several processes: CFG-parallel and Ulysses sequence parallelism.

Every process (one per GPU; gloo on CPU for tests) loads the same pipeline
and runs the same `pipe(...)` call with the same seeds; the transformer,
where nearly all the time goes, is split between them, and every process
ends with the whole result (rank 0's is the one used).

- **CFG-parallel** (`cfg: 2`): the pipeline batches the unconditional and the
  conditional halves of classifier-free guidance; each of the two process
  groups runs one half and the halves are gathered after the transformer.
- **Ulysses** (`ulysses: N`): each process keeps 1/N of the video tokens
  through every per-token layer (norms, projections, feed-forward); around
  attention an all-to-all trades tokens for heads, so each process attends
  over the whole sequence with H/N heads, and a second all-to-all trades
  them back. The 226 text tokens are small: every process keeps all of them
  and takes its heads' slice locally. Heads must divide by N (48 heads: 2,
  4, 8, ...); tokens need not: the shards differ by at most one token (17,550
  video tokens over 4 processes are 4,388 + 4,388 + 4,387 + 4,387), carried
  by all-to-alls of uneven split sizes, not by padding.
- `cfg x ulysses` processes in all (4 GPUs: 2 x 2). Ranks r = c * ulysses + u:
  CFG half c, token shard u.

The arithmetic per head and per token is the single-process arithmetic, so
the result equals it up to float rounding (the tests: as close to a float64
run as the one-process float32 run is, within 2x).

Only rank 0 encodes the prompt and the image (`encode_on_rank_0`: broadcast
to the others, which load no text encoder) and decodes the video; the other
ranks stop at the latents.

This module imports torch: the backends import it only when a layout asks
for more than one process.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F

from f2f.config import ParallelConfig
from f2f.errors import InvalidConfig


@dataclass
class ParallelGroups:
    """This process's place in the layout and its two process groups (made by `init_groups`)."""

    layout: ParallelConfig
    rank: int
    cfg_group: Any
    sp_group: Any

    @property
    def cfg_rank(self) -> int:
        return self.rank // self.layout.ulysses

    @property
    def sp_rank(self) -> int:
        return self.rank % self.layout.ulysses


def init_groups(layout: ParallelConfig) -> ParallelGroups:
    """The CFG and sequence groups of this process; torch.distributed must be initialised with `world_size` ranks."""
    if dist.get_world_size() != layout.world_size:
        rule = f"cfg x ulysses = {layout.world_size} must equal the {dist.get_world_size()} processes started"
        raise InvalidConfig("generator.parallel", f"{layout.cfg} x {layout.ulysses}", rule)
    rank, cfg_group, sp_group = dist.get_rank(), None, None
    for c in range(layout.cfg):  # every rank creates every group, in the same order
        group = dist.new_group([c * layout.ulysses + u for u in range(layout.ulysses)])
        if rank // layout.ulysses == c:
            sp_group = group
    for u in range(layout.ulysses):
        group = dist.new_group([c * layout.ulysses + u for c in range(layout.cfg)])
        if rank % layout.ulysses == u:
            cfg_group = group
    return ParallelGroups(layout, rank, cfg_group, sp_group)


def shard_sizes(tokens: int, parts: int) -> list[int]:
    """`tokens` split into `parts` contiguous shards, the first ones one token longer when it does not divide."""
    base, extra = divmod(tokens, parts)
    return [base + (i < extra) for i in range(parts)]


@dataclass
class _Shards:
    """The video tokens' split in the current forward pass (set by the transformer's pre-hook, before any block)."""

    sizes: list[int] = field(default_factory=list)
    start: int = 0
    end: int = 0

    def split(self, tokens: int, parts: int, rank: int) -> None:
        self.sizes = shard_sizes(tokens, parts)
        self.start = sum(self.sizes[:rank])
        self.end = self.start + self.sizes[rank]


def video_tokens(config: Any, latents_shape: tuple[int, ...]) -> int:
    """Video tokens of latents [B, F, C, H, W] after the patch embedding (CogVideoX 1.5 also patches time)."""
    _, frames, _, height, width = latents_shape
    p, p_t = config.patch_size, config.patch_size_t or 1
    return (frames + p_t - 1) // p_t * (height // p) * (width // p)


def parallelize_transformer(transformer: Any, groups: ParallelGroups) -> None:
    """Make `transformer` (a CogVideoXTransformer3DModel) run split by `groups.layout`; in place, for inference."""
    layout, heads = groups.layout, transformer.config.num_attention_heads
    if layout.ulysses > 1:
        if heads % layout.ulysses:
            raise InvalidConfig(
                "generator.parallel.ulysses", layout.ulysses, f"must divide the transformer's {heads} attention heads"
            )
        _shard_sequence(transformer, groups)
    if layout.cfg > 1:
        _split_guidance(transformer, groups)


def _split_guidance(transformer: Any, groups: ParallelGroups) -> None:
    """Each CFG group runs its half of the batch; the halves are gathered after the transformer.

    Samples of a batch are independent, so any even batch splits this way (with
    guidance: the unconditional and conditional halves). An odd batch (guidance
    1, one seed) runs whole in both groups: the same result, no speed-up.
    """
    half, split = groups.cfg_rank, [False]

    def take_half(_: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if args:
            raise TypeError("call the parallel transformer with keyword arguments (as the diffusers pipelines do)")
        batch = kwargs["hidden_states"].shape[0]
        split[0] = batch % 2 == 0
        if split[0]:
            for name in ("hidden_states", "encoder_hidden_states", "timestep", "ofs", "timestep_cond"):
                value = kwargs.get(name)
                if value is not None and getattr(value, "ndim", 0) >= 1 and value.shape[0] == batch:
                    kwargs[name] = value.chunk(2)[half]
        return args, kwargs

    def gather_halves(_: Any, __: Any, kwargs: dict[str, Any], output: Any) -> Any:
        if not split[0]:
            return output
        sample = output[0] if isinstance(output, tuple) else output.sample
        halves = [sample.new_empty(sample.shape) for _ in range(2)]
        dist.all_gather(halves, sample.contiguous(), group=groups.cfg_group)
        whole = torch.cat(halves)
        if isinstance(output, tuple):
            return (whole, *output[1:])
        output.sample = whole
        return output

    transformer.register_forward_pre_hook(take_half, with_kwargs=True)
    transformer.register_forward_hook(gather_halves, with_kwargs=True)


def _shard_sequence(transformer: Any, groups: ParallelGroups) -> None:
    """Split the video tokens once, at the patch embedding; gather them after the output layer.

    The blocks see only this rank's tokens and carry no hooks of their own, so
    a compiled block (`compile: regional`) has one set of local shapes: no
    graph break, no recompile between blocks or steps.
    """
    shards, parts, rank = _Shards(), groups.layout.ulysses, groups.sp_rank

    def split_rotary(_: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...], dict[str, Any]]:
        if args:
            raise TypeError("call the parallel transformer with keyword arguments (as the diffusers pipelines do)")
        shards.split(video_tokens(transformer.config, tuple(kwargs["hidden_states"].shape)), parts, rank)
        rotary = kwargs.get("image_rotary_emb")  # one row per video token: this shard's rows, for every block
        if rotary is not None:
            kwargs["image_rotary_emb"] = tuple(part[shards.start : shards.end] for part in rotary)
        return args, kwargs

    def keep_local(_: Any, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        text = args[0].shape[1]  # patch_embed(text_embeds, image_embeds) -> [B, text + video tokens, D]
        if output.shape[1] - text != sum(shards.sizes):
            raise RuntimeError(f"the patch embedding made {output.shape[1] - text} video tokens, expected {sum(shards.sizes)}")
        return torch.cat([output[:, :text], output[:, text + shards.start : text + shards.end]], dim=1)

    def gather_tokens(_: Any, __: Any, output: torch.Tensor) -> torch.Tensor:
        longest = max(shards.sizes)
        padded = torch.nn.functional.pad(output, (0, 0, 0, longest - output.shape[1])).contiguous()
        pieces = [torch.empty_like(padded) for _ in range(parts)]
        dist.all_gather(pieces, padded, group=groups.sp_group)
        return torch.cat([piece[:, :size] for piece, size in zip(pieces, shards.sizes, strict=True)], dim=1)

    transformer.register_forward_pre_hook(split_rotary, with_kwargs=True)
    transformer.patch_embed.register_forward_hook(keep_local)
    for block in transformer.transformer_blocks:
        block.attn1.set_processor(UlyssesAttnProcessor(groups.sp_group, parts, rank, shards))
    transformer.proj_out.register_forward_hook(gather_tokens)  # after the per-token output layers


class UlyssesAttnProcessor:
    """CogVideoX joint attention (text + video) with the video tokens sharded over a process group.

    The single-process processor (diffusers' `CogVideoXAttnProcessor2_0`), with
    the all-to-alls: local tokens x all heads -> all tokens x local heads,
    attention, and back.
    """

    def __init__(self, group: Any, parts: int, rank: int, shards: _Shards) -> None:
        self.group, self.parts, self.rank, self.shards = group, parts, rank, shards

    def __call__(
        self,
        attn: Any,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from diffusers.models.embeddings import apply_rotary_emb

        if attention_mask is not None:
            raise NotImplementedError("sequence-parallel CogVideoX attention takes no attention mask (the pipelines pass none)")
        text = encoder_hidden_states.size(1)
        joint = torch.cat([encoder_hidden_states, hidden_states], dim=1)
        batch = joint.shape[0]
        heads, local_heads = attn.heads, attn.heads // self.parts
        if getattr(attn, "fused_projections", False):  # fuse_qkv_projections(): one matmul for q, k and v
            projected = attn.to_qkv(joint).chunk(3, dim=-1)
        else:
            projected = (attn.to_q(joint), attn.to_k(joint), attn.to_v(joint))
        qkv = []
        for x, norm, rotate in zip(projected, (attn.norm_q, attn.norm_k, None), (True, True, False), strict=True):
            x = x.view(batch, -1, heads, x.shape[-1] // heads).transpose(1, 2)  # B, H, S_local, d
            if norm is not None:
                x = norm(x)
            if image_rotary_emb is not None and rotate:
                x[:, :, text:] = apply_rotary_emb(x[:, :, text:], image_rotary_emb)
            heads_here = slice(self.rank * local_heads, (self.rank + 1) * local_heads)
            qkv.append(torch.cat([x[:, heads_here, :text], self._tokens_for_heads(x[:, :, text:])], dim=2))
        out = F.scaled_dot_product_attention(*qkv, dropout_p=0.0, is_causal=False)  # B, H/N, S_all, d
        text_out = self._all_heads(out[:, :, :text])
        video_out = self._heads_for_tokens(out[:, :, text:])
        out = torch.cat([text_out, video_out], dim=2).transpose(1, 2).reshape(batch, -1, heads * out.shape[-1])
        out = attn.to_out[1](attn.to_out[0](out))
        encoder_out, video = out.split([text, out.size(1) - text], dim=1)
        return video, encoder_out

    def _tokens_for_heads(self, x: torch.Tensor) -> torch.Tensor:
        """B, H, local tokens, d -> B, H/N, all tokens, d (all-to-all)."""
        batch, heads, local, dim = x.shape
        send = x.reshape(batch, self.parts, heads // self.parts, local, dim).permute(1, 3, 0, 2, 4)  # N, S_r, B, H/N, d
        send = send.reshape(self.parts * local, batch, heads // self.parts, dim).contiguous()
        sizes = self.shards.sizes
        received = send.new_empty((sum(sizes), batch, heads // self.parts, dim))
        dist.all_to_all_single(received, send, output_split_sizes=sizes, input_split_sizes=[local] * self.parts, group=self.group)
        return received.permute(1, 2, 0, 3)  # B, H/N, S, d

    def _heads_for_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """B, H/N, all tokens, d -> B, H, local tokens, d (the inverse all-to-all)."""
        batch, local_heads, _, dim = x.shape
        sizes, local = self.shards.sizes, self.shards.sizes[self.rank]
        send = x.permute(2, 0, 1, 3).contiguous()  # S, B, H/N, d: rank i's tokens are rows of its shard
        received = send.new_empty((self.parts * local, batch, local_heads, dim))
        dist.all_to_all_single(received, send, output_split_sizes=[local] * self.parts, input_split_sizes=sizes, group=self.group)
        received = received.reshape(self.parts, local, batch, local_heads, dim).permute(2, 0, 3, 1, 4)  # B, N, H/N, S_r, d
        return received.reshape(batch, self.parts * local_heads, local, dim)

    def _all_heads(self, x: torch.Tensor) -> torch.Tensor:
        """B, H/N, text, d -> B, H, text, d (every rank holds all text tokens; gather the heads)."""
        pieces = [torch.empty_like(x) for _ in range(self.parts)]
        dist.all_gather(pieces, x.contiguous(), group=self.group)
        return torch.cat(pieces, dim=1)


def context_parallel(pipe: Any, groups: ParallelGroups) -> None:
    """One video over the ranks by diffusers' own context parallelism (Ulysses over `groups`' sequence group) on every
    denoising transformer (both experts of a two-expert model); rank 0 alone encodes the prompt and the image.

    Diffusers' attention then cuts the video tokens into equal shards, so their count must divide by the ranks
    (`Family.split_divides_tokens`: `check_video` refuses a canvas where it does not). Diffusers builds its mesh on
    the machine's accelerator: without one it cannot split (InvalidConfig).
    """
    from diffusers import ContextParallelConfig

    from f2f.backends.video.speedups import transformers_of

    if torch.accelerator.device_count() == 0:
        layout = groups.layout
        rule = "diffusers' context parallelism needs an accelerator (one CUDA GPU per rank)"
        raise InvalidConfig("generator.parallel", f"cfg {layout.cfg} x ulysses {layout.ulysses}", rule)
    for transformer in transformers_of(pipe):
        transformer.enable_parallelism(config=ContextParallelConfig(ulysses_degree=groups.layout.ulysses))
    encode_on_rank_0(pipe)


def encode_on_rank_0(pipe: Any) -> None:
    """The prompt (T5) and the image (VAE encoder) are encoded by rank 0 alone and broadcast to every rank.

    Every rank then conditions on the very same tensors (on a GPU, two ranks'
    own encodings need not agree to the bit), and ranks 1..N-1 need no text
    encoder at all (CogVideoX-5B's T5-XXL: 9.5 GB in bfloat16). Each rank still
    draws the image latents' sample with its own generator, seeded alike.
    """
    from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
    from diffusers.models.modeling_outputs import AutoencoderKLOutput

    encode_prompt, encode_image, rank = pipe.encode_prompt, pipe.vae.encode, dist.get_rank()

    def prompt_from_rank_0(*args: Any, **kwargs: Any) -> tuple[torch.Tensor | None, ...]:
        # as many tensors as the family's encode_prompt returns (CogVideoX and Wan 2, LTX-Video 4 with the masks)
        embeds = encode_prompt(*args, **kwargs) if rank == 0 else ()
        device = pipe._execution_device
        count = torch.tensor([len(embeds)], dtype=torch.int64, device=device)
        dist.broadcast(count, src=0)
        mine = list(embeds) + [None] * (int(count.item()) - len(embeds))
        return tuple(broadcast_from_rank_0(tensor, device) for tensor in mine)

    def image_from_rank_0(x: torch.Tensor, return_dict: bool = True) -> Any:
        moments = encode_image(x).latent_dist.parameters if rank == 0 else None
        posterior = DiagonalGaussianDistribution(broadcast_from_rank_0(moments, x.device))
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    pipe.encode_prompt, pipe.vae.encode = prompt_from_rank_0, image_from_rank_0


_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int64, torch.int32, torch.bool)  # masks too
_MAX_DIMS = 8


def broadcast_from_rank_0(tensor: torch.Tensor | None, device: torch.device) -> torch.Tensor | None:
    """Rank 0's tensor (or None) on every rank: a header (dtype, shape), then the data (a collective)."""
    header = torch.zeros(2 + _MAX_DIMS, dtype=torch.int64, device=device)  # [present, dtype, *shape (0-padded)]
    if dist.get_rank() == 0 and tensor is not None:
        header[0], header[1] = 1 + tensor.ndim, _DTYPES.index(tensor.dtype)
        header[2 : 2 + tensor.ndim] = torch.tensor(tensor.shape)
    dist.broadcast(header, src=0)
    present, dtype = header[:2].tolist()
    if not present:
        return None
    if dist.get_rank() == 0 and tensor is not None:
        data = tensor.contiguous()
    else:
        data = torch.empty(header[2 : 1 + present].tolist(), dtype=_DTYPES[dtype], device=device)
    dist.broadcast(data, src=0)
    return data


def any_rank(wish: bool) -> bool:
    """True on every rank if `wish` is True on any (a collective: every rank must call it at the same point)."""
    flag = torch.tensor([1.0 if wish else 0.0])
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())
