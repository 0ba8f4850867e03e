"""Dense (per-patch) CLIP features from the loaded ``clip.model`` modules, training-free.

No copy of the architecture: every weight used here is the loaded model's
own (``visual.conv1``, ``visual.transformer.resblocks``, ``visual.attnpool``...),
called in the order of the model's ``forward``; only the last step differs.

* **ViT** -- ClearCLIP (Lan et al., "ClearCLIP: Decomposing CLIP Representations
  for Dense Vision-Language Inference", ECCV 2024). The positional embeddings
  are interpolated (bicubic) to the input's patch grid; the first L-1 blocks
  run as they are; the last block keeps only its attention, with query-query
  attention (``softmax(q q^T / sqrt(d)) v``), no residual and no feed-forward;
  then ``ln_post`` and ``proj`` map every patch into the joint space. Why
  ClearCLIP over MaskCLIP (Zhou et al. 2022: value path only) and SCLIP (Wang
  et al. 2023: correlative q-q + k-k attention): it costs the same single
  pass, its ablation shows the residual is what makes patch features noisy
  (MaskCLIP keeps no attention at all, so neighbouring patches of one object
  do not agree), and it reports higher mIoU than both on most of its eight
  benchmarks with ViT-B/16, with one attention map rather than SCLIP's two.
* **ResNet** -- MaskCLIP (Zhou et al., "Extract Free Dense Labels from CLIP",
  ECCV 2022): the attention pool's value path per location, ``c_proj(v_proj(x + p))``
  with ``p`` the pool's positional embedding interpolated to the feature grid.

The working resolution: the frame's aspect ratio with the long side near
:data:`DENSE_LONG_SIDE` pixels, in whole patches (32 px for ViT-B/32 and the
ResNets' stride). Measured on the 2-core CPU here (ViT-B/32, random weights,
bf16), a 640x480 frame: 448x320 (10x14 cells of ~46 frame pixels) takes
0.057 s, 640x480 (15x20 cells) 0.084 s, 224x160 0.025 s; one batch of 86
224 px crops takes 1.07 s. 448 keeps the dense pass near a twentieth of the
crop pipeline; 640 would halve the cell area (the evaluation's smallest
objects are 30 px) for 1.5 times the dense cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

DENSE_LONG_SIDE = 448


def working_size(height: int, width: int, step: int, long_side: int = DENSE_LONG_SIDE
                 ) -> tuple[int, int]:
    """(h, w) in pixels: the frame's aspect ratio, long side near ``long_side``,
    both multiples of ``step`` (at least one step)."""
    scale = long_side / max(height, width)
    return (max(1, round(height * scale / step)) * step,
            max(1, round(width * scale / step)) * step)


def interpolate_grid(positional: torch.Tensor, rows: int, cols: int,
                     leading: int = 1) -> torch.Tensor:
    """``[leading + g*g, C]`` positional embeddings -> ``[leading + rows*cols, C]``.

    The ``leading`` (class) rows are kept; the square grid is resized bicubically.
    At the native grid the embeddings are returned unchanged.
    """
    head, spatial = positional[:leading], positional[leading:]
    side = int(round(spatial.shape[0] ** 0.5))
    if side * side != spatial.shape[0]:
        raise ValueError(f"positional embedding of {spatial.shape[0]} rows is not a square grid")
    if (rows, cols) == (side, side):
        return positional
    grid = spatial.float().reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(rows, cols), mode="bicubic", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(rows * cols, -1).to(positional.dtype)
    return torch.cat([head, grid])


def is_vit(visual: torch.nn.Module) -> bool:
    return hasattr(visual, "transformer") and hasattr(visual, "class_embedding")


def patch_step(visual: torch.nn.Module) -> int:
    """Pixels per output cell: the ViT's patch size, or the ResNet's stride of 32."""
    if is_vit(visual):
        return int(visual.conv1.kernel_size[0])
    return 32


def qq_attention(attn: torch.nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """ClearCLIP's query-query self-attention with the module's own weights.

    ``x`` is ``[L, N, C]`` (CLIP's layout); returns ``out_proj(softmax(q q^T/sqrt(d)) v)``.
    """
    length, batch, width = x.shape
    heads = attn.num_heads
    w_q, _, w_v = attn.in_proj_weight.chunk(3)
    b_q, _, b_v = (attn.in_proj_bias.chunk(3) if attn.in_proj_bias is not None
                   else (None, None, None))
    q = F.linear(x, w_q, b_q)
    v = F.linear(x, w_v, b_v)

    def split(t: torch.Tensor) -> torch.Tensor:  # [L, N, C] -> [N, heads, L, C/heads]
        return t.reshape(length, batch, heads, width // heads).permute(1, 2, 0, 3)

    q, v = split(q), split(v)
    out = F.scaled_dot_product_attention(q, q, v)
    out = out.permute(2, 0, 1, 3).reshape(length, batch, width)
    return attn.out_proj(out)


def vit_dense(visual: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """ClearCLIP patch embeddings: normalised ``[1, 3, H, W]`` -> ``[H/p, W/p, D]``."""
    x = visual.conv1(x)  # [1, width, rows, cols]
    rows, cols = x.shape[-2:]
    x = x.flatten(2).permute(0, 2, 1)  # [1, rows*cols, width]
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1)
    x = x + interpolate_grid(visual.positional_embedding, rows, cols).to(x.dtype)
    x = visual.ln_pre(x).permute(1, 0, 2)  # NLD -> LND
    blocks = visual.transformer.resblocks
    for block in blocks[:-1]:
        x = block(x)
    last = blocks[-1]
    x = qq_attention(last.attn, last.ln_1(x))  # no residual, no MLP
    x = visual.ln_post(x.permute(1, 0, 2)[:, 1:])  # patches only
    if visual.proj is not None:
        x = x @ visual.proj.to(x.dtype)
    return x.reshape(rows, cols, -1)


def resnet_dense(visual: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """MaskCLIP value path: normalised ``[1, 3, H, W]`` -> ``[H/32, W/32, D]``."""
    x = x.type(visual.conv1.weight.dtype)
    x = visual.relu1(visual.bn1(visual.conv1(x)))
    x = visual.relu2(visual.bn2(visual.conv2(x)))
    x = visual.relu3(visual.bn3(visual.conv3(x)))
    x = visual.avgpool(x)
    for layer in (visual.layer1, visual.layer2, visual.layer3, visual.layer4):
        x = layer(x)
    pool = visual.attnpool
    rows, cols = x.shape[-2:]
    tokens = x.flatten(2).permute(0, 2, 1)[0]  # [rows*cols, C]
    tokens = tokens + interpolate_grid(pool.positional_embedding, rows, cols)[1:].to(x.dtype)
    out = pool.c_proj(pool.v_proj(tokens))
    return out.reshape(rows, cols, -1)


@torch.inference_mode()
def encode_dense(encoder, image: torch.Tensor, long_side: int | None = None) -> torch.Tensor:
    """The dense-feature contract for a :class:`~.clip_encoder.ClipEncoder`.

    ``image`` is ``[1, 3, H, W]`` float RGB in [0, 1] on the encoder's device.
    Returns float32 ``[h, w, D]`` in the space of ``encode_images``; cell
    ``(i, j)`` covers rows ``[i*H/h, (i+1)*H/h)`` and columns ``[j*W/w, (j+1)*W/w)``.
    """
    if image.dim() != 4 or image.shape[0] != 1 or image.shape[1] != 3:
        raise ValueError(f"encode_dense takes [1, 3, H, W], got {list(image.shape)}")
    visual = encoder.model.visual
    step = patch_step(visual)
    size = working_size(image.shape[2], image.shape[3], step,
                        long_side or getattr(encoder, "dense_long_side", DENSE_LONG_SIDE))
    if tuple(image.shape[2:]) != size:
        image = F.interpolate(image.float(), size=size, mode="bilinear", align_corners=False,
                              antialias=True)
    x = encoder.normalize(image).to(encoder.input_dtype)
    with encoder.precision():
        out = vit_dense(visual, x) if is_vit(visual) else resnet_dense(visual, x)
    return out.to(torch.float32)
