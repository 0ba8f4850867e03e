"""Prompt-ensembled text embeddings, their cache, and the softmax over classes."""

from __future__ import annotations

import threading
import zlib
from collections.abc import Sequence

import pytest
import torch
import torch.nn.functional as F

from clip_perception.core.detect.scoring import TextBank, target_scores

DIM = 16
TEMPLATES = ("a photo of a {}.", "a cropped photo of the {}.", "{}")
BACKGROUNDS = ("table", "wall")
NEUTRAL = "object"


def raw_embedding(text: str) -> torch.Tensor:
    """A fixed, unnormalised vector per text (norm varies, so normalisation matters)."""
    gen = torch.Generator().manual_seed(zlib.crc32(text.encode()))
    return torch.randn(DIM, generator=gen) * (1.0 + len(text) % 5)


class CountingEncoder:
    input_size = 32

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        self.calls.append(list(texts))
        return torch.stack([raw_embedding(t) for t in texts])


def ensemble(phrase: str, templates: Sequence[str] = TEMPLATES) -> torch.Tensor:
    per_template = torch.stack([F.normalize(raw_embedding(t.format(phrase)), dim=0)
                                for t in templates])
    return F.normalize(per_template.mean(dim=0), dim=0)


def make_bank(encoder: CountingEncoder, max_entries: int = 256) -> TextBank:
    return TextBank(encoder, TEMPLATES, BACKGROUNDS, NEUTRAL, torch.device("cpu"),
                    max_entries=max_entries)


def test_new_phrases_cost_one_call_and_are_cached() -> None:
    encoder = CountingEncoder()
    bank = make_bank(encoder)
    bank.phrases(["hammer", "cup"])
    assert encoder.calls == [[t.format(p) for p in ("hammer", "cup") for t in TEMPLATES]]
    bank.phrases(["cup", "hammer", "cup"])
    assert len(encoder.calls) == 1
    bank.phrases(["cup", "wrench"])
    assert len(encoder.calls) == 2
    assert encoder.calls[1] == [t.format("wrench") for t in TEMPLATES]


def test_duplicates_are_encoded_once_but_returned_in_place() -> None:
    encoder = CountingEncoder()
    out = make_bank(encoder).phrases(["cup", "cup", "mug"])
    assert out.shape == (3, DIM)
    assert len(encoder.calls[0]) == 2 * len(TEMPLATES)
    assert torch.equal(out[0], out[1])


def test_prompt_ensemble_is_the_renormalised_mean_of_normalised_prompts() -> None:
    out = make_bank(CountingEncoder()).phrases(["red mug", "hammer"])
    assert torch.allclose(out[0], ensemble("red mug"), atol=1e-6)
    assert torch.allclose(out[1], ensemble("hammer"), atol=1e-6)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-6)
    # not the mean of raw (unnormalised) vectors
    raw_mean = torch.stack([raw_embedding(t.format("hammer")) for t in TEMPLATES]).mean(0)
    assert not torch.allclose(out[1], F.normalize(raw_mean, dim=0), atol=1e-3)


def test_classes_are_targets_then_backgrounds_then_neutral() -> None:
    encoder = CountingEncoder()
    bank = make_bank(encoder)
    classes = bank.classes(["cup", "hammer"])
    expected = torch.stack([ensemble(p) for p in ("cup", "hammer", *BACKGROUNDS, NEUTRAL)])
    assert classes.shape == (2 + len(BACKGROUNDS) + 1, DIM)
    assert torch.allclose(classes, expected, atol=1e-6)
    calls = len(encoder.calls)
    bank.classes(["hammer"])  # context and targets cached
    assert len(encoder.calls) == calls


def test_cache_overflow_starts_over_and_stays_correct() -> None:
    encoder = CountingEncoder()
    bank = make_bank(encoder, max_entries=3)
    bank.phrases(["a1", "a2", "a3"])
    out = bank.phrases(["a4", "a1"])
    assert torch.allclose(out[0], ensemble("a4"), atol=1e-6)
    assert torch.allclose(out[1], ensemble("a1"), atol=1e-6)
    assert len(encoder.calls) == 2  # a4, and a1 again after the clear, in one call
    assert encoder.calls[1] == [t.format(p) for p in ("a4", "a1") for t in TEMPLATES]
    assert torch.allclose(bank.phrases(["a4"]), ensemble("a4")[None], atol=1e-6)
    assert len(encoder.calls) == 2


def scores_setup(seed: int = 0, n_images: int = 6, n_targets: int = 2):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(n_images, DIM, generator=gen) * 3.0
    classes = F.normalize(torch.randn(n_targets + len(BACKGROUNDS) + 1, DIM, generator=gen), dim=1)
    return images, classes


@pytest.mark.parametrize("logit_scale", [1.0, 10.0, 100.0])
def test_target_scores_are_the_full_softmax_columns(logit_scale: float) -> None:
    images, classes = scores_setup()
    probs, evidence = target_scores(images, classes, 2, logit_scale)
    assert probs.shape == evidence.shape == (len(images), 2)
    cos = F.normalize(images, dim=1) @ classes.T
    logits = logit_scale * cos
    full = torch.exp(logits) / torch.exp(logits).sum(dim=1, keepdim=True)
    assert torch.allclose(full.sum(dim=1), torch.ones(len(images)))
    assert torch.allclose(probs, full[:, :2], atol=1e-6)
    assert ((probs >= 0) & (probs <= 1)).all()
    if logit_scale <= 10:  # no float32 saturation: strictly inside (0, 1)
        assert ((probs > 0) & (probs < 1)).all()
        assert (probs.sum(dim=1) < 1).all()  # backgrounds and neutral always take a share
    assert torch.allclose(evidence, logits[:, :2] - logits[:, -1:], atol=1e-5)


def test_image_embedding_scale_does_not_matter() -> None:
    images, classes = scores_setup(1)
    a = target_scores(images, classes, 2, 50.0)
    b = target_scores(images * 123.0, classes, 2, 50.0)
    assert torch.allclose(a[0], b[0], atol=1e-6) and torch.allclose(a[1], b[1], atol=1e-4)


def test_a_perfect_match_is_still_below_one() -> None:
    classes = torch.eye(4)  # target, two backgrounds, neutral
    probs, evidence = target_scores(classes[:1] * 5.0, classes, 1, 5.0)
    e5 = torch.tensor(5.0).exp().item()
    assert float(probs[0, 0]) == pytest.approx(e5 / (e5 + 3))  # three rivals at cosine 0
    assert float(evidence[0, 0]) == pytest.approx(5.0)


def test_low_precision_embeddings_are_scored_in_float32() -> None:
    images, classes = scores_setup(2)
    probs, _ = target_scores(images.to(torch.bfloat16), classes, 2, 10.0)
    assert probs.dtype == torch.float32



class _PausingCache(dict):
    """A cache that pauses the reader thread right after it found ``phrase`` cached."""

    def __init__(self, phrase: str, reader: list, checked: threading.Event,
                 cleared: threading.Event):
        super().__init__()
        self.phrase, self.reader, self.checked, self.cleared = phrase, reader, checked, cleared

    def __contains__(self, key) -> bool:
        found = super().__contains__(key)
        if key == self.phrase and found and threading.current_thread() is self.reader[0]:
            self.checked.set()
            self.cleared.wait(0.5)  # with a lock, the clearing thread waits for us instead
        return found


@pytest.mark.slow
def test_classes_are_consistent_while_another_thread_overflows_the_cache() -> None:
    """The worker reads classes() while the executor thread prepares new targets; a
    prepare that overflows the cache clears it, and that must not break the reader."""
    bank = make_bank(CountingEncoder(), max_entries=3)
    checked, cleared, reader, got = threading.Event(), threading.Event(), [], []
    bank.phrases(["hammer"])
    cache = _PausingCache("hammer", reader, checked, cleared)
    cache.update(bank._cache)
    bank._cache = cache

    def read() -> None:
        try:
            got.append(bank.classes(["hammer"]))
        except Exception as exc:  # noqa: BLE001 - any failure is the finding
            got.append(exc)

    reader.append(threading.Thread(target=read))
    reader[0].start()
    assert checked.wait(5)
    bank.phrases(["saw", "drill", "wrench"])  # 1 + 3 > 3 entries: the cache is cleared
    cleared.set()
    reader[0].join(5)
    assert not isinstance(got[0], Exception), f"classes() failed: {got[0]!r}"
    assert torch.allclose(got[0][0], ensemble("hammer"), atol=1e-6)
