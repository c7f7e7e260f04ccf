from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from PIL import Image

from f2f.caption import CAPTION_INSTRUCTION, EDIT_INSTRUCTION, caption_messages, clean_caption, load_exemplars
from f2f.errors import InvalidConfig

GOLDEN = Path(__file__).parent / "golden"
SHARED = Path(__file__).resolve().parents[3] / "shared"  # ../shared beside the project


def render(messages) -> str:
    """Messages as text, each image as <image WxH>: what a golden file pins."""

    def part(p):
        return f"<image {p['image'].width}x{p['image'].height}>" if p["type"] == "image" else p["text"]

    return "\n".join(f"### {m['role']}\n" + "\n".join(part(p) for p in m["content"]) for m in messages) + "\n"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("F2F_UPDATE_GOLDEN"):
        path.write_text(text)
    assert text == path.read_text(), f"{name} changed; review it and rerun with F2F_UPDATE_GOLDEN=1"


def test_caption_prompt_golden():
    messages = caption_messages(Image.new("RGB", (400, 300)), "make the dog sit", load_exemplars())
    check_golden("caption_messages.txt", render(messages))


def test_caption_prompt_shape():
    image = Image.new("RGB", (400, 300))
    messages = caption_messages(image, "A photo of a sitting dog.", load_exemplars())
    assert [m["role"] for m in messages] == ["user", "assistant"] * 9 + ["user"]
    assert all(CAPTION_INSTRUCTION in m["content"][-1]["text"] for m in messages if m["role"] == "user")
    final = messages[-1]["content"]
    assert final[0] == {"type": "image", "image": image}  # the PIL image itself, not encoded
    assert final[1]["text"].endswith('Edit request: "A photo of a sitting dog."')


def test_instruction_states_the_methods_requirements():
    text = CAPTION_INSTRUCTION.lower()
    for phrase in [
        "one simple, concise sentence",
        "only the change",
        "no object that is neither",
        "camera stays still",
        "within a few seconds",
        'the word "video"',
        "make the dog sit",
        "a photo of a sitting dog",
    ]:
        assert phrase in text


def test_packaged_exemplars_are_nine_mixed_and_follow_the_rules():
    exemplars = [e.exemplar for e in load_exemplars()]
    assert len(exemplars) == 9
    instructions = [e for e in exemplars if e.edit[0].islower()]
    assert 3 <= len(instructions) <= 6, "both forms of edit text must be shown"
    for e in exemplars:
        assert "video" not in e.caption.lower()
        assert len(re.findall(r"[.!?](\s|$)", e.caption)) == 1, e.caption
        assert not re.search(r"\d+\s*(seconds?|s)\b", e.caption)


def test_exemplars_do_not_leak_posedit():
    annotations = SHARED / "data" / "posedit" / "annotations.json"
    if not annotations.exists():
        pytest.skip("PosEdit is not beside the project")
    items = json.loads(annotations.read_text())
    texts = {
        t.lower().strip(" .")
        for item in items
        for t in (item["target_caption"], item["instruction"], item["temporal_editing_caption"])
    }
    for e in load_exemplars():
        for t in (e.exemplar.edit, e.exemplar.caption, e.exemplar.source):
            assert t.lower().strip(" .") not in texts


def test_exemplars_from_a_file_with_an_image(tmp_path):
    Image.new("RGB", (8, 6), (1, 2, 3)).save(tmp_path / "cat.png")
    path = tmp_path / "ex.yaml"
    path.write_text("- {source: a cat, edit: make it jump, caption: The cat jumps., image: cat.png}\n")
    (loaded,) = load_exemplars(path)
    assert loaded.image.size == (8, 6)
    messages = caption_messages(Image.new("RGB", (4, 4)), "x", [loaded])
    assert messages[0]["content"][0]["type"] == "image"
    assert "The source image is attached." in messages[0]["content"][1]["text"]


@pytest.mark.parametrize(
    ("content", "phrase"),
    [
        ("- {source: a, edit: b}\n", "caption"),
        ("- {source: a, edit: b, caption: c, colour: red}\n", "colour"),
        ("{a: 1}", "list"),
    ],
)
def test_bad_exemplar_files_are_rejected(tmp_path, content, phrase):
    path = tmp_path / "ex.yaml"
    path.write_text(content)
    with pytest.raises(InvalidConfig, match=phrase) as info:
        load_exemplars(path)
    assert info.value.field == "caption.exemplars_path"


# (VLM answer, cleaned caption or None for the fallback)
CLEANER_TABLE = [
    ("A dog slowly sits down on the grass.", "A dog slowly sits down on the grass."),
    ("a dog slowly sits down on the grass", "A dog slowly sits down on the grass."),
    ('"A dog slowly sits down on the grass."', "A dog slowly sits down on the grass."),
    ("\u201cA dog slowly sits down.\u201d", "A dog slowly sits down."),
    ("'The candle flame grows steadily.'", "The candle flame grows steadily."),
    ("Caption: A dog slowly sits down.", "A dog slowly sits down."),
    ("caption - no colon so it stays as it is", "Caption - no colon so it stays as it is."),
    ("Temporal caption: The door swings open.", "The door swings open."),
    ("Temporal editing caption: The door swings open.", "The door swings open."),
    ("**Caption:** The door swings open.", "The door swings open."),
    ("Sure! Here is the caption: The door swings open.", "The door swings open."),
    ("Here's the temporal caption:\n\nThe door swings open.", "The door swings open."),
    ("Answer: The tree's leaves turn red.", "The tree's leaves turn red."),
    ("Output: The snowman melts into slush.", "The snowman melts into slush."),
    ("The dog sits down. The camera stays static.", "The dog sits down."),
    ("The dog sits down! Then it wags.", "The dog sits down!"),
    ("- The woman gradually smiles.", "The woman gradually smiles."),
    ("`The woman gradually smiles.`", "The woman gradually smiles."),
    ("The woman gradually smiles.<|im_end|>", "The woman gradually smiles."),
    ("  \n  The woman gradually smiles.  \n", "The woman gradually smiles."),
    ("The man raises his arm\nand waves.", "The man raises his arm."),
    ("", None),
    ("   \n\t ", None),
    (None, None),
    ("...", None),
    ("!!!???", None),
    ("Dog.", None),
    ("sits down", None),
    ("ĠĠĊ ĉ ĠĠ Ġ", None),
    ("12 34 56 78 90 11 22", None),
    ("a1b2 c3d4 e5f6 g7h8 ##$$%%", None),
    ("<|im_start|><|im_end|>", None),
    ("Caption:", None),
    ("xkcd" * 3 + " 0x9f3e 0x77a1 0xdead", None),
]


@pytest.mark.parametrize(("answer", "expected"), CLEANER_TABLE)
def test_clean_caption_table(answer, expected):
    assert clean_caption(answer) == expected


def test_long_captions_are_cut_at_a_word_boundary():
    answer = "The red car rolls " + "very " * 100 + "slowly."
    cleaned = clean_caption(answer, max_chars=60)
    assert len(cleaned) <= 61 and cleaned.endswith(".")
    assert cleaned.startswith("The red car rolls very") and "  " not in cleaned
    assert answer.startswith(cleaned[:-1])


# --- the instruction style (ChronoEdit) ---------------------------------------------------------------


def test_instruction_prompt_golden():
    style = "instruction"
    messages = caption_messages(Image.new("RGB", (400, 300)), "make the dog sit", load_exemplars(None, style), style)
    check_golden("instruction_caption_messages.txt", render(messages))
    assert all(EDIT_INSTRUCTION in m["content"][-1]["text"] for m in messages if m["role"] == "user")
    assert CAPTION_INSTRUCTION not in render(messages)


def test_the_edit_instruction_states_what_changes_and_what_must_stay():
    text = EDIT_INSTRUCTION.lower()
    for phrase in ["begin with the change", "how the changed part should look", "must stay exactly as it is",
                   "no object that is neither", "two to four plain sentences", "make the dog sit"]:  # fmt: skip
        assert phrase in text


def test_packaged_instruction_exemplars_are_mixed_and_follow_the_rules():
    exemplars = [e.exemplar for e in load_exemplars(None, "instruction")]
    assert len(exemplars) == 6
    assert 3 <= sum(e.edit[0].islower() for e in exemplars) <= 4, "both forms of edit text must be shown"
    for e in exemplars:
        assert 2 <= len(re.findall(r"[.!?](\s|$)", e.caption)) <= 4, e.caption
        assert re.search(r"\b(stay|keep)\b", e.caption.lower()), e.caption  # says what must not change
        assert "video" not in e.caption.lower() and "\n" not in e.caption
        assert clean_caption(e.caption, 800, "instruction") == e.caption  # an exemplar survives the cleaner


INSTRUCTION_TABLE = [
    ("Add a red hat to the dog. Keep the background unchanged.", "Add a red hat to the dog. Keep the background unchanged."),
    ("Instruction:\nAdd a red hat to the dog.\nKeep the lawn as it is.", "Add a red hat to the dog. Keep the lawn as it is."),
    ("**Rewritten prompt:** Add a red hat to the dog. The lawn must stay.", "Add a red hat to the dog. The lawn must stay."),
    ('"add a red hat to the dog; the rest stays"<|im_end|>', "Add a red hat to the dog; the rest stays."),
    ("", None),
    ("!!! ???", None),
    ("Write two to four plain sentences: no lists, no headings, no reasoning.", None),  # the prompt echoed
]


@pytest.mark.parametrize(("answer", "expected"), INSTRUCTION_TABLE)
def test_clean_instruction_table(answer, expected):
    assert clean_caption(answer, 300, "instruction") == expected


def test_the_style_is_the_familys_unless_the_config_names_one(tmp_path):
    from f2f.config import load_config

    cache = {"cache_dir": str(tmp_path)}
    assert load_config(overrides={"profile": "tiny", **cache}).caption.style == "temporal"
    assert load_config(overrides={"profile": "tiny-chronoedit", **cache}).caption.style == "instruction"
    asked = {"profile": "tiny-chronoedit", "caption": {"style": "temporal"}, **cache}
    assert load_config(overrides=asked).caption.style == "temporal"
    assert load_config().caption.style is None  # no generator: the pipeline writes a temporal caption
