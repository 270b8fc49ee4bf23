"""The visual task suite, image preprocessing and the MathVista loader."""

import logging

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from k15_jax.data.images import image_patches, patchify, to_array
from k15_jax.data.mathvista import load_mathvista
from k15_jax.data.synthetic import SyntheticConfig, SyntheticSuite, is_eval_prompt
from k15_jax.data.templates import template
from k15_jax.data.visual import GLYPHS, VisualConfig, VisualSuite, render
from k15_jax.model.config import VisionConfig
from k15_jax.model.tokenizer import CharTokenizer
from k15_jax.rewards.math import score_math
from k15_jax.train.vision.data import VisionData, image_twin, modality


def _read_digits(img: Image.Image) -> list[str]:
    """OCR of the 3x5 font at 2 px per dot, independent of the renderer: find dark
    columns, cut glyphs, match each 3x5 bitmap against the glyph table."""
    dark = np.asarray(img.convert("L")) < 128
    rows = np.flatnonzero(dark.any(axis=1))
    lines, start = [], rows[0]
    for a, b in zip(rows, list(rows[1:]) + [None]):
        if b is None or b != a + 1:
            lines.append(dark[start : a + 1])
            start = b
    out = []
    for line in lines:
        cols = np.flatnonzero(line.any(axis=0))
        text, x = "", cols[0]
        while x <= cols[-1]:
            cell = line[:, x : x + 6][:, ::2][::2]  # 10x6 px -> 5x3 dots
            bits = tuple("".join("1" if v else "0" for v in r) for r in cell)
            match = [ch for ch, g in GLYPHS.items() if g == bits]
            assert len(match) == 1, bits
            text += match[0]
            x += 8
        out.append(text)
    return out


def test_text_rendered_task_is_the_same_problem_in_both_modalities():
    text_suite = SyntheticSuite(SyntheticConfig(bands=["add2"], sft_band_weights=[1.0]))
    for t in text_suite.eval_tasks("add2")[:20]:
        img_task = image_twin(t)
        a, b = t.meta["operands"]
        assert _read_digits(render(img_task, 32)) == [str(a), f"+{b}"]
        assert img_task.reference == t.reference == str(a + b)
        # the same worked solution verifies against the same reference in both modalities
        text_demo = text_suite.demonstration(t)
        img_demo = VisualSuite().demonstration(img_task)
        correct, _ = score_math([text_demo, img_demo], [t.reference, img_task.reference])
        assert correct.tolist() == [1.0, 1.0]
        wrong, _ = score_math([f"\\boxed{{{a + b + 1}}}"], [img_task.reference])
        assert wrong.tolist() == [0.0]
        # held out as text <=> held out as image
        assert is_eval_prompt(f"{a}+{b}", 0.1)


def _blobs(img: Image.Image, rgb) -> int:
    x = np.asarray(img).astype(int)
    mask = np.abs(x - np.array(rgb)).sum(-1) < 60
    return ndimage.label(mask)[1]


def test_scene_answers_match_the_pixels():
    suite = VisualSuite(VisualConfig(bands=["count1", "count2", "compare1", "bars1"]))
    for t in suite.eval_tasks("count2")[:30]:
        assert _blobs(render(t, 32), (220, 40, 40)) == int(t.reference)
    for t in suite.eval_tasks("compare1")[:30]:
        img = render(t, 32)
        assert _blobs(img, (220, 40, 40)) - _blobs(img, (40, 70, 220)) == int(t.reference)
    for t in suite.eval_tasks("count1")[:30]:
        gray = np.asarray(render(t, 32).convert("L")) < 230
        assert ndimage.label(gray)[1] == int(t.reference)
    for t in suite.eval_tasks("bars1")[:30]:
        dark = np.asarray(render(t, 32).convert("L")) < 128
        heights = [dark[:, c].sum() for c in (5, 15, 24)]  # the bar centres at 32 px
        assert int(np.argmax(heights)) + 1 == int(t.reference)


def test_suite_is_deterministic_and_split():
    a, b = VisualSuite(), VisualSuite()
    for band in a.bands:
        ev = a.eval_tasks(band)
        assert [t.id for t in ev] == [t.id for t in b.eval_tasks(band)]
        pool = {t.id for t in a.train_pool([band])}
        assert not pool & {t.id for t in ev}
        img1, img2 = render(ev[0], 32), render(b.eval_tasks(band)[0], 32)
        assert np.array_equal(np.asarray(img1), np.asarray(img2))
    rng1, rng2 = np.random.default_rng(3), np.random.default_rng(3)
    assert [t.id for t in a.sft_tasks(50, rng1)] == [t.id for t in b.sft_tasks(50, rng2)]


def test_patchify_matches_a_loop():
    x = np.random.default_rng(0).normal(size=(16, 24, 3)).astype(np.float32)
    p = patchify(x, 8)
    assert p.shape == (6, 192)
    for i in range(2):
        for j in range(3):
            np.testing.assert_array_equal(
                p[i * 3 + j], x[8 * i : 8 * i + 8, 8 * j : 8 * j + 8].ravel()
            )
    white = to_array(Image.new("RGB", (10, 10), (255, 255, 255)), 32)
    assert white.shape == (32, 32, 3) and np.allclose(white, 1.0)


def test_prompt_ids_put_one_placeholder_per_patch():
    v = VisionConfig(image_token_id=100)
    vd = VisionData(_run_cfg(), v, SyntheticSuite())
    tok, tpl = CharTokenizer(), template("compact")
    img_task = vd.suite.eval_tasks("count1")[0]
    ids = vd.prompt_ids(tok, tpl, img_task)
    assert ids[0] == tok.bos_id and ids.count(100) == v.num_patches
    assert tok.decode(ids) == img_task.prompt + "\n"
    text_task = SyntheticSuite().eval_tasks("add2")[0]
    assert vd.prompt_ids(tok, tpl, text_task) == tok.encode(text_task.prompt + "\n", bos=True)
    batch = vd.batch([img_task, text_task, None], 4)
    assert batch.shape == (4, 1, 16, 192)
    np.testing.assert_array_equal(batch[0, 0], image_patches(render(img_task, 32), v))
    assert not batch[1:].any()
    assert modality(img_task) == "image" and modality(text_task) == "text"


def _run_cfg(**mathvista):
    from k15_jax.data.mathvista import MathVistaConfig
    from k15_jax.train.vision.config import VisionRunConfig

    return VisionRunConfig(enabled=True, mathvista=MathVistaConfig(**mathvista))


def test_mathvista_skips_missing_and_corrupt_images(tmp_path, caplog):
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 30), (10, 200, 10)).save(images / "1.png")
    (images / "2.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    Image.new("RGB", (20, 20)).save(images / "4.png")
    (images / "4.png").write_bytes((images / "4.png").read_bytes()[:30])  # truncated
    rows = [
        {"pid": "1", "question": "How many?", "image": "images/1.png", "answer": "3"},
        {"pid": "2", "question": "What?", "image": "images/2.jpg", "answer": "1"},
        {"pid": "3", "question": "Gone?", "image": "images/3.png", "answer": "2"},
        {"pid": "4", "question": "Cut?", "image": "images/4.png", "answer": "5"},
        {
            "pid": "5",
            "question": "Which?",
            "image": "images/1.png",
            "answer": "red",
            "question_type": "multi_choice",
            "choices": ["red", "blue"],
        },
    ]
    path = tmp_path / "testmini.jsonl"
    import json

    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with caplog.at_level(logging.WARNING, logger="k15_jax"):
        tasks, stats = load_mathvista(path)
    assert [t.id for t in tasks] == ["mathvista/1", "mathvista/5"]
    assert stats["skipped_images"] == 3 and stats["rows"] == 5
    for name in ("2.jpg", "3.png", "4.png"):
        assert any(name in r.getMessage() for r in caplog.records), name
    assert "skipped 3 of 5" in caplog.text
    assert "(A) red" in tasks[1].prompt and tasks[1].reference == "red"
    # through the trainer's image path: the file is read and patchified
    vd = VisionData(_run_cfg(path=str(path)), VisionConfig(), SyntheticSuite())
    assert len(vd.mathvista) == 2 and vd.images(vd.mathvista[0]).shape == (1, 16, 192)
    with pytest.raises(FileNotFoundError, match="vision.mathvista.path"):
        load_mathvista(tmp_path / "nope.jsonl")


def test_packed_sft_rows_carry_their_images_in_placeholder_order():
    from k15_jax.train.sft import pack

    v = VisionConfig(image_token_id=100)
    vd = VisionData(_run_cfg(), v, SyntheticSuite())
    tok, tpl = CharTokenizer(), template("compact")
    examples = vd.sft_examples(40, np.random.default_rng(0), tok, tpl)
    assert any(modality(t) == "image" for *_, t in examples)
    assert any(modality(t) == "text" for *_, t in examples)
    where = []
    tokens, seg, _, _ = pack([e[:2] for e in examples], 6, 128, tok.pad_id, where)
    imgs = vd.packed_images([e[2] for e in examples], where, 6, 128)
    assert imgs.shape == (6, 128 // 16, 16, 192)
    for r in range(6):
        placed = [t for (*_, t), w in zip(examples, where) if w == r and modality(t) == "image"]
        assert (tokens[r] == 100).sum() == 16 * len(placed)
        for i, t in enumerate(placed):  # segment order = order of placement
            np.testing.assert_array_equal(imgs[r, i], image_patches(render(t, 32), v))
        assert not imgs[r, len(placed) :].any()
