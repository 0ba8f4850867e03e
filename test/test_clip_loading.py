"""Loading encoders: the real CLIP path with a tiny random checkpoint, and the errors.

No weights are downloaded: a CLIP with the ViT architecture but tiny sizes is
built here and saved the two ways users have checkpoints: a TorchScript
archive (OpenAI's .pt files are traced JIT archives) and a plain state dict.
Both are loaded by ``load_encoder`` through ``clip.load``.
"""

from __future__ import annotations

import math
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

with warnings.catch_warnings():  # openai-clip imports the deprecated pkg_resources
    warnings.simplefilter("ignore")
    import clip
    from clip.model import CLIP

from clip_perception.core.detect.config import DetectorConfig
from clip_perception.core.detect.detector import Detector
from clip_perception.core.encoder import ModelLoadError
from clip_perception.core.model import clip_encoder
from clip_perception.core.model.clip_encoder import (
    CLIP_MEAN,
    CLIP_STD,
    ClipEncoder,
    resolve_device,
    resolve_precision,
)
from clip_perception.core.model.loading import is_factory_spec, load_encoder
from clip_perception.testing.color_encoder import ColorEncoder

EMBED_DIM = 32
RESOLUTION = 32

# clip.load reads checkpoints with torch.jit.load, which torch 2.9+ marks deprecated.
pytestmark = pytest.mark.filterwarnings("ignore:`torch\\.jit:FutureWarning")


def tiny_clip(seed: int = 0) -> CLIP:
    torch.manual_seed(seed)
    return CLIP(embed_dim=EMBED_DIM, image_resolution=RESOLUTION, vision_layers=2,
                vision_width=64, vision_patch_size=8, context_length=77, vocab_size=49408,
                transformer_width=64, transformer_heads=1, transformer_layers=1).eval()


@pytest.fixture(scope="module")
def tiny_model() -> CLIP:
    return tiny_clip()


@pytest.fixture(scope="module")
def tiny_jit_checkpoint(tmp_path_factory, tiny_model: CLIP) -> Path:
    """The tiny CLIP traced and saved as a TorchScript archive, like OpenAI's files."""
    path = tmp_path_factory.mktemp("clip") / "tiny_jit.pt"
    example = (torch.rand(2, 3, RESOLUTION, RESOLUTION), clip.tokenize(["a dog", "a cat"]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.jit.trace(tiny_model, example).save(str(path))
    return path


@pytest.fixture(scope="module")
def tiny_state_dict_checkpoint(tmp_path_factory, tiny_model: CLIP) -> Path:
    path = tmp_path_factory.mktemp("clip") / "tiny.pt"
    torch.save(tiny_model.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def tiny_encoder(tiny_jit_checkpoint: Path) -> ClipEncoder:
    return load_encoder(str(tiny_jit_checkpoint), device="cpu", precision="fp32")


def reference_image_embeddings(model: CLIP, images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        return model.encode_image((images - mean) / std).float()


@pytest.mark.slow
def test_jit_archive_loads_through_clip_load(tiny_encoder: ClipEncoder, tiny_model: CLIP) -> None:
    assert isinstance(tiny_encoder, ClipEncoder)
    assert tiny_encoder.input_size == RESOLUTION
    assert tiny_encoder.logit_scale == pytest.approx(math.exp(tiny_model.logit_scale.item()),
                                                     rel=1e-3)
    assert 0 < tiny_encoder.logit_scale <= 100
    images = torch.rand(3, 3, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(0))
    out = tiny_encoder.encode_images(images)
    assert out.shape == (3, EMBED_DIM) and out.dtype == torch.float32
    # the same network as the source model, fed CLIP-normalised pixels
    # (clip.load stores weights in fp16 and casts back, hence not exactly equal)
    want = reference_image_embeddings(tiny_model, images)
    assert (F.cosine_similarity(out, want) > 0.999).all()
    texts = tiny_encoder.encode_texts(["a photo of a red mug.", "hammer", "x" * 500])
    assert texts.shape == (3, EMBED_DIM) and texts.dtype == torch.float32
    with torch.no_grad():
        want_text = tiny_model.encode_text(clip.tokenize(["a photo of a red mug."]))
    assert F.cosine_similarity(texts[:1], want_text.float()).item() > 0.999


def test_state_dict_checkpoint_loads(tiny_state_dict_checkpoint: Path) -> None:
    encoder = load_encoder(str(tiny_state_dict_checkpoint), device="cpu", precision="fp32")
    assert encoder.input_size == RESOLUTION
    assert encoder.encode_images(torch.rand(2, 3, RESOLUTION, RESOLUTION)).shape == (2, EMBED_DIM)


def test_logit_scale_is_capped_at_100() -> None:
    model = tiny_clip(1)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(1000.0))
    assert ClipEncoder(model, torch.device("cpu"), torch.float32).logit_scale == 100.0


@pytest.mark.slow
def test_detector_runs_on_tiny_clip(tiny_encoder: ClipEncoder) -> None:
    width, height = 96, 64
    frame = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    detector = Detector(tiny_encoder, DetectorConfig())
    detection = detector.detect(frame, ["red mug"], with_heatmap=True)
    assert len(detection.targets) == 1
    result = detection.targets[0]
    assert 0.0 < result.score < 1.0
    assert result.present == (result.score >= detector.config.presence_threshold)
    assert 0.0 < result.frame_score <= result.score
    assert len(result.window_scores) == len(detection.windows)
    assert list(result.best_window) in detection.windows.tolist()
    x0, y0, x1, y1 = result.box
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height
    assert detection.crops <= detector.config.crop_budget
    assert detection.heatmaps[0].shape == (math.ceil(height / 8), math.ceil(width / 8))


@pytest.mark.slow
def test_bf16_on_cpu_is_close_to_fp32(tiny_jit_checkpoint: Path, tiny_encoder: ClipEncoder) -> None:
    bf16 = load_encoder(str(tiny_jit_checkpoint), device="cpu", precision="bf16")
    images = torch.rand(4, 3, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(1))
    a, b = tiny_encoder.encode_images(images), bf16.encode_images(images)
    assert b.dtype == torch.float32 and b.shape == a.shape
    assert (F.cosine_similarity(a, b) > 0.99).all()
    texts = ["a photo of a red mug.", "a photo of a table."]
    ta, tb = tiny_encoder.encode_texts(texts), bf16.encode_texts(texts)
    assert (F.cosine_similarity(ta, tb) > 0.99).all()


def test_fp16_on_cpu_is_refused(tiny_jit_checkpoint: Path) -> None:
    with pytest.raises(ModelLoadError, match="fp16"):
        load_encoder(str(tiny_jit_checkpoint), device="cpu", precision="fp16")


def test_unknown_precision(tiny_jit_checkpoint: Path) -> None:
    with pytest.raises(ModelLoadError, match="fp32"):
        load_encoder(str(tiny_jit_checkpoint), device="cpu", precision="fp8")


def test_cuda_without_cuda(monkeypatch, tiny_jit_checkpoint: Path) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        load_encoder(str(tiny_jit_checkpoint), device="cuda", precision="fp32")
    with pytest.raises(ModelLoadError, match="CUDA"):
        resolve_device("cuda:0")
    assert resolve_device("auto") == torch.device("cpu")


def test_unknown_device() -> None:
    with pytest.raises(ModelLoadError, match="unknown device"):
        resolve_device("banana")


def test_auto_precision(monkeypatch) -> None:
    assert resolve_precision("auto", torch.device("cuda")) == torch.float16
    monkeypatch.setattr(clip_encoder, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("auto", torch.device("cpu")) == torch.bfloat16
    monkeypatch.setattr(clip_encoder, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("auto", torch.device("cpu")) == torch.float32
    assert resolve_precision(" BF16 ", torch.device("cpu")) == torch.bfloat16


def test_unknown_model_name_lists_the_models() -> None:
    with pytest.raises(ModelLoadError) as info:
        load_encoder("RN999", device="cpu", precision="fp32")
    message = str(info.value)
    assert "ViT-B/32" in message and "RN50" in message
    assert "checkpoint" in message and "module:factory" in message


def test_mistyped_clip_name_lists_the_models() -> None:
    with pytest.raises(ModelLoadError) as info:
        load_encoder("ViT-Z/99", device="cpu", precision="fp32")
    assert "ViT-B/32" in str(info.value) and "checkpoint" in str(info.value)


def test_missing_checkpoint_file() -> None:
    with pytest.raises(ModelLoadError, match="does not exist") as info:
        load_encoder("/nonexistent/model.pt", device="cpu", precision="fp32")
    assert "/nonexistent/model.pt" in str(info.value)


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("no network in this test")


def test_named_model_offline_says_how_to_fix_it(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    with pytest.raises(ModelLoadError) as info:
        load_encoder("ViT-B/32", device="cpu", precision="fp32", download_root=str(tmp_path))
    message = str(info.value)
    assert "no network in this test" in message
    assert str(tmp_path) in message  # where to put the file
    assert "ViT-B-32.pt" in message  # which file
    assert "model:=/path/to/ViT-B-32.pt" in message  # or how to point at it
    assert not (tmp_path / "ViT-B-32.pt").exists()


def test_named_model_offline_default_cache(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    with pytest.raises(ModelLoadError) as info:
        load_encoder("ViT-B/32", device="cpu", precision="fp32")
    assert str(tmp_path / ".cache" / "clip") in str(info.value)


def test_corrupt_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "corrupt.pt"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ModelLoadError, match="CLIP checkpoint") as info:
        load_encoder(str(path), device="cpu", precision="fp32")
    assert str(path) in str(info.value)


def test_checkpoint_of_something_else(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, path)
    with pytest.raises(ModelLoadError, match="CLIP checkpoint"):
        load_encoder(str(path), device="cpu", precision="fp32")


def test_empty_model_name() -> None:
    for name in ("", "   "):
        with pytest.raises(ModelLoadError, match="no model"):
            load_encoder(name, device="cpu")


FACTORIES = '''
class _NoImages:
    input_size = 32
    def encode_texts(self, texts):
        return None

def missing(device="cpu"):
    return _NoImages()

def broken(device="cpu"):
    raise RuntimeError("weights not found")
'''


@pytest.fixture(scope="module")
def factory_module(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("factories")
    (folder / "cp_test_factories.py").write_text(FACTORIES)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))
        yield "cp_test_factories"


@pytest.mark.parametrize("spec, message", [
    ("nonexistent.module:factory", "could not be imported"),
    ("clip_perception.testing.color_encoder:nope", "could not be imported"),
])
def test_factory_import_errors(spec: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=message) as info:
        load_encoder(spec, device="cpu")
    assert spec in str(info.value)


def test_factory_result_without_encode_images(factory_module: str) -> None:
    with pytest.raises(ModelLoadError, match="lacks encode_images"):
        load_encoder(f"{factory_module}:missing", device="cpu")


def test_factory_that_raises(factory_module: str) -> None:
    with pytest.raises(ModelLoadError, match="weights not found"):
        load_encoder(f"{factory_module}:broken", device="cpu")


def test_factory_success_with_the_colour_encoder() -> None:
    encoder = load_encoder("clip_perception.testing.color_encoder:factory", device="cpu")
    assert isinstance(encoder, ColorEncoder)
    assert encoder.device == torch.device("cpu")
    out = encoder.encode_images(torch.zeros(2, 3, encoder.input_size, encoder.input_size))
    assert out.shape == (2, encoder.dim)


@pytest.mark.parametrize("spec, is_factory", [
    ("clip_perception.testing.color_encoder:factory", True),
    ("pkg:make", True),
    ("ViT-B/32", False),
    ("ViT-L/14@336px", False),
    ("C:\\models\\clip.pt", False),
    ("module:", False),
    (":factory", False),
])
def test_factory_spec_recognition(spec: str, is_factory: bool) -> None:
    assert is_factory_spec(spec) is is_factory


def test_existing_file_with_a_colon_is_a_file(tmp_path: Path) -> None:
    path = tmp_path / "pkg:make"
    path.write_bytes(b"")
    assert not is_factory_spec(str(path))
