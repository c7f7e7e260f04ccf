"""Step 6 with several seeds: rank the judged clips, the best first.

Rules:

* The label rule: "edited" clips by the label of their chosen frame, lowest
  first (the least drift from the source), then "fallback" clips, then
  "no_edit" ones; ties go to the earlier seed.
* Finalists are the "edited" clips. With fewer than two there is nothing to
  rank (rule "single"); with `selection.rank: label` the label rule decides
  (rule "label_rule"). Either way the VLM is not asked.
* Otherwise the VLM sees one collage: the source on top (the canvas cut to its
  box), each finalist's chosen frame beneath, labelled 1..K in the order asked
  (`ranking_messages`), and names the one that achieves the edit while
  changing least of everything else. Against position bias it is asked twice,
  concurrently and greedily, without retries: the finalists in seed order,
  then reversed. Answers are read by `parse_selection`; 0 names no finalist.
* Both answers name the same finalist: it wins (rule "vlm"). They differ, or
  either names none: the label rule's best wins (rule "label_rule").
* The ranking: the winner, then every other clip by the label rule.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from PIL import Image

from f2f.canvas import Letterboxed
from f2f.config import F2FConfig
from f2f.protocols import VLM, Frames
from f2f.result import ClipOutcome, Ranking, RankRule
from f2f.selection import make_collage, parse_selection, ranking_messages

_STATUS_ORDER = {"edited": 0, "fallback": 1, "no_edit": 2}


def label_order(judged: Sequence[ClipOutcome]) -> list[int]:
    """Clip indices by the label rule, best first."""
    return sorted(range(len(judged)), key=lambda i: (_STATUS_ORDER[judged[i].status], judged[i].label or 0, i))


async def rank_clips(
    vlm: VLM, judged: Sequence[ClipOutcome], clips: Sequence[Frames], canvas: Letterboxed, text: str, config: F2FConfig
) -> tuple[list[int], Ranking]:
    """Clip indices best first, and how they were ranked."""
    order = label_order(judged)
    finalists = [i for i, outcome in enumerate(judged) if outcome.status == "edited"]
    if len(finalists) < 2 or config.selection.rank == "label":
        return order, Ranking("single" if len(finalists) < 2 else "label_rule", _seeds(judged, order), [], [])
    chosen = {i: clips[i][judged[i].frame].crop(canvas.box) for i in finalists}
    asked = [finalists, finalists[::-1]]
    source = canvas.image.crop(canvas.box)
    answers = list(await asyncio.gather(*(_ask(vlm, source, [chosen[i] for i in ask], text, config) for ask in asked)))
    first, second = (_pick(answer, ask) for answer, ask in zip(answers, asked, strict=True))
    rule: RankRule = "vlm" if first is not None and first == second else "label_rule"
    if rule == "vlm":
        order = [first, *(i for i in order if i != first)]
    return order, Ranking(rule, _seeds(judged, order), answers, [_seeds(judged, ask) for ask in asked])


def _seeds(judged: Sequence[ClipOutcome], indices: list[int]) -> list[int]:
    return [judged[i].seed for i in indices]


async def _ask(vlm: VLM, source: Image.Image, versions: list[Image.Image], text: str, config: F2FConfig) -> str:
    cfg = config.selection
    collage = make_collage(source, versions, cfg.collage_columns, cfg.collage_max_pixels)
    answer = await vlm.chat(ranking_messages(collage, text, len(versions)), max_tokens=cfg.max_new_tokens, temperature=0.0)
    return answer.text


def _pick(answer: str, asked: list[int]) -> int | None:
    """The clip index the answer names among the tiles as asked, or None (unreadable, or 0)."""
    label = parse_selection(answer, len(asked))
    return asked[label - 1] if label else None
