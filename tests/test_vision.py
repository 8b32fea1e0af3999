"""Vision encoders: shapes, layer selection, transformers parity, packing and 2D RoPE."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vlmbench.errors import UserError
from vlmbench.modeling.config import VisionConfig
from vlmbench.modeling.vision import (
    NativeViT,
    ViT,
    apply_rope_2d,
    build_vision_encoder,
    load_hf_vision,
    rope_2d_angles,
)

TINY_HF = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=32,
    patch_size=8,
)


def tiny(**kw) -> VisionConfig:
    base = dict(image_size=32, patch_size=8, hidden_size=32, num_layers=3, num_heads=4, intermediate_size=64)
    return VisionConfig(**{**base, **kw})


# ---- ViT ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("style,use_cls", [("clip", True), ("siglip", False)])
def test_vit_shapes_grid_and_interpolation(style: str, use_cls: bool) -> None:
    torch.manual_seed(0)
    vit = ViT(tiny(style=style, use_cls=use_cls)).eval()
    assert vit.out_dim == 32
    assert vit.grid(32, 48) == (4, 6)
    assert vit(torch.randn(2, 3, 32, 32)).shape == (2, 16, 32)
    assert vit(torch.randn(1, 3, 48, 24)).shape == (1, 18, 32)  # interpolated 4x4 table → 6x3
    with pytest.raises(UserError, match="multiple"):
        vit(torch.randn(1, 3, 30, 32))


def test_vit_builds_only_needed_blocks() -> None:
    assert len(ViT(tiny(feature_layer=-2)).blocks) == 2
    assert len(ViT(tiny(feature_layer=-1)).blocks) == 3
    assert len(ViT(tiny(feature_layer=0)).blocks) == 0
    with pytest.raises(UserError, match="feature_layer"):
        ViT(tiny(feature_layer=4))


def test_vit_rows_are_row_major() -> None:
    """A patch-local change in row r, column c only moves feature (r * cols + c) at layer 0."""
    vit = ViT(tiny(feature_layer=0, use_cls=False, style="siglip")).eval()
    x = torch.randn(1, 3, 32, 48)
    y = x.clone()
    y[:, :, 8:16, 40:48] += 1.0  # row 1, col 5 of a 4x6 grid
    diff = (vit(x) - vit(y)).abs().sum(-1)[0]
    assert diff.nonzero().flatten().tolist() == [1 * 6 + 5]


# ---- transformers checkpoints -------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("hf")
    clip = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**TINY_HF)).eval()
    siglip = transformers.SiglipVisionModel(transformers.SiglipVisionConfig(**TINY_HF)).eval()
    # make LayerNorms non-trivial so a wrong mapping cannot hide behind ones/zeros
    with torch.no_grad():
        for model in (clip, siglip):
            for name, p in model.named_parameters():
                if "norm" in name:
                    p.add_(torch.randn_like(p) * 0.1)
    clip.save_pretrained(root / "clip", safe_serialization=True)
    siglip.save_pretrained(root / "siglip", safe_serialization=True)
    return {"root": root, "clip": clip, "siglip": siglip, "transformers": transformers}


def test_load_clip_matches_transformers(hf_dirs: dict) -> None:
    model, cfg = load_hf_vision(hf_dirs["root"] / "clip")
    assert (cfg.style, cfg.use_cls, cfg.hidden_act, cfg.num_layers) == ("clip", True, "quick_gelu", 3)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = hf_dirs["clip"](pixel_values=x, output_hidden_states=True).hidden_states[-2][:, 1:]
        torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=0)
        assert model(torch.randn(1, 3, 48, 40)).shape == (1, 30, 32)


def test_load_siglip_matches_transformers(hf_dirs: dict) -> None:
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = hf_dirs["siglip"](pixel_values=x, output_hidden_states=True)
        penultimate, cfg = load_hf_vision(hf_dirs["root"] / "siglip")
        assert (cfg.style, cfg.use_cls, cfg.image_mean) == ("siglip", False, (0.5, 0.5, 0.5))
        torch.testing.assert_close(penultimate(x), out.hidden_states[-2], atol=1e-5, rtol=0)
        last, _ = load_hf_vision(hf_dirs["root"] / "siglip", {"feature_layer": -1})
        torch.testing.assert_close(last(x), out.last_hidden_state, atol=1e-5, rtol=0)
        assert last(torch.randn(1, 3, 24, 40)).shape == (1, 15, 32)


def test_load_full_clip_model_dir(hf_dirs: dict, tmp_path: Path) -> None:
    tf = hf_dirs["transformers"]
    text = dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, vocab_size=64
    )
    text.update(bos_token_id=0, eos_token_id=1, pad_token_id=1)
    full = tf.CLIPModel(tf.CLIPConfig(vision_config=TINY_HF, text_config=text)).eval()
    full.save_pretrained(tmp_path, safe_serialization=True)
    model, cfg = load_hf_vision(tmp_path, {"feature_layer": -1})
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = full.vision_model(pixel_values=x, output_hidden_states=True).hidden_states[-1][:, 1:]
        torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=0)


def test_build_vision_encoder_dispatch(hf_dirs: dict) -> None:
    assert isinstance(build_vision_encoder(tiny()), ViT)
    assert isinstance(build_vision_encoder(tiny(kind="native_vit")), NativeViT)
    path = str(hf_dirs["root"] / "clip")
    enc = build_vision_encoder(VisionConfig(pretrained=path, feature_layer=-1))  # preset sizes are ignored
    assert enc.config.hidden_size == 32 and len(enc.blocks) == 3
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = hf_dirs["clip"](pixel_values=x, output_hidden_states=True).hidden_states[-1][:, 1:]
        torch.testing.assert_close(enc(x), ref, atol=1e-5, rtol=0)
    with pytest.raises(UserError, match="native_vit"):
        build_vision_encoder(tiny(kind="native_vit", pretrained=path))


def test_load_errors_name_path_and_fix(hf_dirs: dict, tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    with pytest.raises(UserError, match="does not exist") as err:
        load_hf_vision(missing)
    assert str(missing) in str(err.value)
    with pytest.raises(UserError, match="config.json"):
        load_hf_vision(tmp_path)
    cfg = json.loads((hf_dirs["root"] / "clip" / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "pytorch_model.bin").write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="safe_serialization") as err:
        load_hf_vision(tmp_path)
    assert str(tmp_path) in str(err.value) and "pytorch_model.bin" in str(err.value)
    (tmp_path / "config.json").write_text(json.dumps({**cfg, "model_type": "dinov2"}))
    with pytest.raises(UserError, match="dinov2"):
        load_hf_vision(tmp_path)
    with pytest.raises(UserError, match="conflicts"):
        load_hf_vision(hf_dirs["root"] / "clip", {"hidden_size": 64})


# ---- NativeViT ----------------------------------------------------------------------------------


def native(**kw) -> NativeViT:
    torch.manual_seed(0)
    return NativeViT(tiny(kind="native_vit", feature_layer=-1, **kw)).eval()


def test_native_packing_equals_one_by_one() -> None:
    vit = native()
    a, b, c = torch.randn(3, 16, 40), torch.randn(3, 32, 24), torch.randn(3, 8, 8)
    with torch.no_grad():
        packed = vit([a, b, c])
        alone = [vit([img])[0] for img in (a, b, c)]
    assert [f.shape for f in packed] == [(10, 32), (12, 32), (1, 32)]
    assert vit.grid(16, 40) == (2, 5)
    for p, s in zip(packed, alone, strict=True):
        torch.testing.assert_close(p, s, atol=1e-5, rtol=0)


def _score(q: torch.Tensor, k: torch.Tensor, qpos: tuple[int, int], kpos: tuple[int, int]) -> torch.Tensor:
    """q·k after rotating q at qpos and k at kpos (single head, head_dim = q.numel())."""
    dh = q.numel()
    ang = rope_2d_angles(torch.tensor([qpos[0], kpos[0]]), torch.tensor([qpos[1], kpos[1]]), dh, 10000.0)
    rq = apply_rope_2d(q.view(1, 1, 1, dh), ang[:1])
    rk = apply_rope_2d(k.view(1, 1, 1, dh), ang[1:])
    return (rq * rk).sum()


def test_rope_2d_depends_on_relative_offset_only() -> None:
    torch.manual_seed(0)
    q, k = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    base = _score(q, k, (1, 2), (4, 7))
    for dr, dc in [(3, 0), (0, 5), (2, 9), (-1, -2)]:
        torch.testing.assert_close(_score(q, k, (1 + dr, 2 + dc), (4 + dr, 7 + dc)), base, atol=1e-5, rtol=0)
    # rows and columns are distinguished: swapping a non-square offset changes the score
    assert (_score(q, k, (0, 0), (1, 3)) - _score(q, k, (0, 0), (3, 1))).abs() > 1e-3
    # and they rotate at different frequencies (not merely different channels)
    row = rope_2d_angles(torch.tensor([1]), torch.tensor([0]), 16, 10000.0)[0]
    col = rope_2d_angles(torch.tensor([0]), torch.tensor([1]), 16, 10000.0)[0]
    assert torch.all(row[4:] == 0) and torch.all(col[:4] == 0)
    assert not torch.allclose(row[:4], col[4:])
    # rotation preserves norms
    x = torch.randn(1, 3, 2, 16)
    ang = rope_2d_angles(torch.tensor([0, 1, 2]), torch.tensor([5, 0, 3]), 16, 10000.0)
    torch.testing.assert_close(apply_rope_2d(x, ang).norm(dim=-1), x.norm(dim=-1))


def test_native_wrong_size_is_user_error() -> None:
    vit = native()
    with pytest.raises(UserError, match="20x16"):
        vit([torch.randn(3, 16, 20)])
    with pytest.raises(UserError, match="multiple"):
        vit.grid(17, 16)


def test_native_gradients_reach_every_parameter() -> None:
    vit = NativeViT(tiny(kind="native_vit", feature_layer=-2)).train()
    feats = vit([torch.randn(3, 16, 24), torch.randn(3, 8, 16)])
    torch.cat(feats).pow(2).mean().backward()
    for name, p in vit.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
