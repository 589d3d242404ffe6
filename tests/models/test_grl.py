"""GRL: parameter counts, official checkpoint format, attention vs a literal formulation, size rule,
ONNX export (size and agreement)."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

import collections
import math

import torch
import torch.nn.functional as F

from restorekit.errors import TileSizeError, WeightsError
from restorekit.models.catalog import grl as catalog
from restorekit.models.checkpoint import load_weights
from restorekit.models.grl import GRL, restore_any_size
from restorekit.models.registry import resolve

# Tiny configuration with the structure of the real ones (4 blocks: shifted/unshifted windows,
# horizontal/vertical stripes, shifted/unshifted stripes).
TINY = {
    "embed_dim": 16,
    "depths": [4],
    "num_heads_window": [2],
    "num_heads_stripe": [2],
    "window_size": 8,
    "stripe_size": [8, 16],
    "anchor_window_down_factor": 2,
}
TINY_B = {**TINY, "embed_dim": 18, "num_heads_window": [3], "num_heads_stripe": [3]}


def _count(name: str) -> int:
    with torch.device("meta"):
        model = resolve(name).build()
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------- parameter counts (docs/models.md, GRL)
@pytest.mark.parametrize(
    ("name", "millions"),
    [
        ("grl-t.sr_x4", 0.906),
        ("grl-s.sr_x4", 3.488),
        ("grl-b.sr_x4", 20.201),
        ("grl-t.sr_x2", 0.885),
        ("grl-b.sr_x2", 20.054),
        ("grl-t.dn_c3s25", 0.880),
        ("grl-s.dn_c3s25", 3.120),
        ("grl-b.dn_c3s25", 19.805),
        ("grl-s.jpeg_c3q20", 3.120),
        ("grl-b.db_gopro", 19.805),
    ],
)
def test_parameter_counts_match_measured_official(name: str, millions: float) -> None:
    assert round(_count(name) / 1e6, 3) == millions


def test_parameter_counts_match_paper() -> None:
    # Paper Table 5 (SR x4) and Table 4 (denoising), two decimals.
    assert [round(_count(f"grl-{s}.sr_x4") / 1e6, 2) for s in "tsb"] == [0.91, 3.49, 20.20]
    assert [round(_count(f"grl-{s}.dn_c3s15") / 1e6, 2) for s in "tsb"] == [0.88, 3.12, 19.81]


def test_catalog_names_alias_and_size_rules() -> None:
    assert resolve("grl").name == "grl-t.demo_dn_s25"  # the bundled demo weights
    assert resolve("grl-s.jpeg_c1q40").variant.color_order == "Y"
    for name in ("grl-t.jpeg_c3q10", "grl-t.dm", "grl-s.db_gopro", "grl-t.bsr_x4"):
        with pytest.raises(KeyError):
            resolve(name)
    for name, pad in (
        ("grl-t.dn_c3s25", 128),
        ("grl-s.jpeg_c3q20", 144),
        ("grl-s.dm", 32),
        ("grl-b.db_gopro", 96),
        ("grl-b.sr_x4", 64),
        ("grl-b.bsr_x4", 64),
    ):
        ref = resolve(name)
        rule = catalog.size_rule(ref.variant)
        assert rule.multiple_of == pad
        rule.check_tile(ref.variant.default_tile, ref.name)
        assert ref.spec.size_rule.multiple_of and pad % ref.spec.size_rule.multiple_of == 0
        with torch.device("meta"):
            assert ref.build().pad_size == pad


# ---------------------------------------------------------------- literal attention formulation
def _literal_table(window, df):
    # Official get_relative_coords_table_all, written out: centred integer offsets, scaled to
    # [-8, 8] by the positive extent, log-compressed.
    axes = []
    for w in window:
        a = w // df
        pos = w - 1 - (w - a) // 2
        neg = -(a - 1) - (w - a) // 2
        axes.append(torch.arange(neg, pos + 1, dtype=torch.float32) / pos)
    t = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1) * 8
    return torch.sign(t) * torch.log2(t.abs() + 1.0) / math.log2(8)


def _literal_index(window, df, window_to_anchor):
    # Every (query, key) token pair, by explicit coordinates.
    wh, ww = window
    ah, aw = wh // df, ww // df
    win = [(r, c) for r in range(wh) for c in range(ww)]
    anc = [(r, c) for r in range(ah) for c in range(aw)]
    row_len = ww + aw - 1
    if window_to_anchor:
        return torch.tensor(
            [[(r - ar + ah - 1) * row_len + (c - ac + aw - 1) for ar, ac in anc] for r, c in win]
        )
    return torch.tensor(
        [[(ar - r + wh - 1) * row_len + (ac - c + ww - 1) for r, c in win] for ar, ac in anc]
    )


def _literal_labels(size, window, shift):
    # The shifted-window region image of Swin: slices [0:-w], [-w:-s], [-s:], numbered in order.
    img = torch.zeros(size)
    n = 0
    for hs in (slice(0, -window[0]), slice(-window[0], -shift[0]), slice(-shift[0], None)):
        for ws in (slice(0, -window[1]), slice(-window[1], -shift[1]), slice(-shift[1], None)):
            img[hs, ws] = n
            n += 1
    h, w = size
    img = img.reshape(h // window[0], window[0], w // window[1], window[1])
    return img.permute(0, 2, 1, 3).reshape(-1, window[0] * window[1])  # (windows, tokens)


def _literal_mask(labels_q, labels_k):
    diff = labels_q[:, :, None] - labels_k[:, None, :]
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


def _partition(x, window):
    b, h, w, c = x.shape
    x = x.reshape(b, h // window[0], window[0], w // window[1], window[1], c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window[0] * window[1], c)


def _unpartition(x, window, size, batch):
    h, w = size
    x = x.reshape(batch, h // window[0], w // window[1], window[0], window[1], -1)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(batch, h, w, -1)


def _literal_attend(q, k, v, transform, table, index, mask):
    heads = q.shape[1]
    attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
    attn = attn * torch.exp(torch.clamp(transform.logit_scale, max=math.log(100.0)))
    bias = transform.cpb_mlp(table).reshape(-1, heads)[index.reshape(-1)]
    bias = 16 * torch.sigmoid(bias.reshape(*index.shape, heads).permute(2, 0, 1))
    attn = attn + bias[None]
    if mask is not None:
        nw = mask.shape[0]
        attn = (attn.reshape(-1, nw, *attn.shape[1:]) + mask[None, :, None]).reshape(attn.shape)
    return torch.softmax(attn, dim=-1) @ v


def literal_window_attention(module, qkv, size):
    b = qkv.shape[0]
    h, w = size
    ws = module.window_size
    s = module.shift_size
    heads = module.num_heads
    x = qkv.reshape(b, h, w, -1)
    if s:
        x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
    x = _partition(x, ws)
    n, c3 = x.shape[1], x.shape[2]
    q, k, v = x.reshape(-1, n, 3, heads, c3 // 3 // heads).permute(2, 0, 3, 1, 4)
    mask = None
    if s:
        labels = _literal_labels(size, ws, (s, s))
        mask = _literal_mask(labels, labels)
    out = _literal_attend(
        q, k, v, module.attn_transform, _literal_table(ws, 1), _literal_index(ws, 1, True), mask
    )
    out = _unpartition(out.transpose(1, 2).reshape(-1, n, c3 // 3), ws, size, b)
    if s:
        out = torch.roll(out, shifts=(s, s), dims=(1, 2))
    return out.reshape(b, h * w, -1)


def literal_stripe_attention(module, qkv, anchor, size):
    b = qkv.shape[0]
    h, w = size
    df = module.anchor_window_down_factor
    st = module.stripe_size
    ast = (st[0] // df, st[1] // df)
    heads = module.num_heads
    sh = (st[0] // 2, st[1] // 2)
    ash = (sh[0] // df, sh[1] // df)
    x = qkv.reshape(b, h, w, -1)
    if module.stripe_shift:
        x = torch.roll(x, shifts=(-sh[0], -sh[1]), dims=(1, 2))
        anchor = torch.roll(anchor, shifts=(-ash[0], -ash[1]), dims=(1, 2))
    x = _partition(x, st)
    a = _partition(anchor, ast)
    n1, c3 = x.shape[1], x.shape[2]
    n2 = a.shape[1]
    q, k, v = x.reshape(-1, n1, 3, heads, c3 // 3 // heads).permute(2, 0, 3, 1, 4)
    a = a.reshape(-1, n2, heads, c3 // 3 // heads).permute(0, 2, 1, 3)
    mask_a2w = mask_w2a = None
    if module.stripe_shift:
        lab_w = _literal_labels(size, st, sh)
        lab_a = _literal_labels((h // df, w // df), ast, ash)
        mask_a2w, mask_w2a = _literal_mask(lab_a, lab_w), _literal_mask(lab_w, lab_a)
    table = _literal_table(st, df)
    y = _literal_attend(
        a, k, v, module.attn_transform1, table, _literal_index(st, df, False), mask_a2w
    )
    y = _literal_attend(
        q, a, y, module.attn_transform2, table, _literal_index(st, df, True), mask_w2a
    )
    y = _unpartition(y.transpose(1, 2).reshape(-1, n1, c3 // 3), st, size, b)
    if module.stripe_shift:
        y = torch.roll(y, shifts=sh, dims=(1, 2))
    return y.reshape(b, h * w, -1)


def _tiny_model(**extra) -> GRL:
    torch.manual_seed(0)
    model = resolve("grl-t.dn_c3s25").build(**{**TINY, **extra}).eval()
    # Random (not initial) position-MLP weights and logit scales, so the bias really varies.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "cpb_mlp" in name or "logit_scale" in name:
                p.copy_(
                    torch.randn_like(p) * (0.5 if "cpb_mlp" in name else 1.0)
                    + 1.0 * ("logit" in name)
                )
    return model


def _report(ours: torch.Tensor, ref: torch.Tensor) -> str:
    err = (ours - ref).abs().flatten()
    q = torch.quantile(err[:100000], torch.tensor([0.5, 0.99]))
    return (
        f"max {err.max():.3g}, median {q[0]:.3g}, p99 {q[1]:.3g}, over 1e-5: {(err > 1e-5).sum()}"
    )


@pytest.mark.parametrize("size", [(16, 32), (32, 16)])
@pytest.mark.parametrize("block_index", [0, 1, 2, 3])
def test_attention_equals_literal_formulation(size, block_index) -> None:
    model = _tiny_model()
    block = model.layers[0].blocks[block_index]
    h, w = size
    positions = model.positions(size, 0, 0)
    kind = "sv" if block.stripe_type == "W" else "sh"
    tag = "shifted" if block.stripe_shift else "plain"
    torch.manual_seed(block_index)
    dim = 16
    qkv_w = torch.randn(2, h * w, dim * 3 // 2)
    qkv_s = torch.randn(2, h * w, dim * 3 // 2)
    anchor = torch.randn(2, h // 2, w // 2, dim // 2)
    attn = block.attn
    with torch.no_grad():
        ours_w = attn.window_attn(
            qkv_w, size, positions["w_shifted" if block.window_shift else "w_plain"]
        )
        ref_w = literal_window_attention(attn.window_attn, qkv_w, size)
        ours_s = attn.stripe_attn(
            qkv_s, anchor, size, positions[f"{kind}_a2w_{tag}"], positions[f"{kind}_w2a_{tag}"]
        )
        ref_s = literal_stripe_attention(attn.stripe_attn, qkv_s, anchor, size)
    assert (ours_w - ref_w).abs().max() <= 1e-5, _report(ours_w, ref_w)
    assert (ours_s - ref_s).abs().max() <= 1e-5, _report(ours_s, ref_s)


@pytest.mark.parametrize("bias", [True, False])
def test_qkv_halves_equal_splitting_the_whole_projection(bias) -> None:
    from restorekit.models.grl.attention import QKVProjection

    torch.manual_seed(1)
    proj = QKVProjection(16, qkv_bias=bias).eval()
    x = torch.randn(2, 48, 16)
    with torch.no_grad():
        window, stripe = proj.halves(x)
        ref_window, ref_stripe = torch.split(proj(x), 24, dim=-1)
    assert window.shape == stripe.shape == (2, 48, 24)
    torch.testing.assert_close(window, ref_window, rtol=0, atol=1e-6)
    torch.testing.assert_close(stripe, ref_stripe, rtol=0, atol=1e-6)


def test_block_types_follow_official_schedule() -> None:
    blocks = _tiny_model().layers[0].blocks
    assert [b.window_shift for b in blocks] == [True, False, True, False]
    assert [b.stripe_type for b in blocks] == ["H", "W", "H", "W"]
    assert [b.stripe_shift for b in blocks] == [False, False, True, True]
    assert blocks[1].attn.stripe_attn.stripe_size == (16, 8)


# ---------------------------------------------------------------- size rule
def _literal_reflect_pad(x, ph, pw):
    # Bottom/right reflection without repeating the edge row/column.
    if ph:
        x = torch.cat([x, x[:, :, -ph - 1 : -1].flip(2)], dim=2)
    if pw:
        x = torch.cat([x, x[:, :, :, -pw - 1 : -1].flip(3)], dim=3)
    return x


def test_any_size_equals_padding_outside_then_cropping() -> None:
    model = _tiny_model()
    x = torch.rand(2, 3, 21, 27)
    with torch.no_grad():
        ours = restore_any_size(model, x)
        ref = model(_literal_reflect_pad(x, 32 - 21, 32 - 27))[:, :, :21, :27]
    assert ours.shape == x.shape
    assert torch.equal(ours, ref)


def test_rejects_sizes_that_break_the_size_rule() -> None:
    model = _tiny_model()
    with pytest.raises(TileSizeError, match="multiple of pad_size 16"):
        model(torch.rand(1, 3, 16, 24))


def test_batch_elements_are_independent() -> None:
    model = _tiny_model()
    x = torch.rand(3, 3, 16, 32)
    with torch.no_grad():
        whole = model(x)
        single = torch.cat([model(x[i : i + 1]) for i in range(3)])
    assert (whole - single).abs().max() <= 1e-5


# ---------------------------------------------------------------- official checkpoint format
def _official_buffers(model: GRL, train_size: int) -> dict[str, torch.Tensor]:
    # The 13 persistent buffers of the official model at its training patch size (shapes as
    # set_table_index_mask makes them); values do not matter, they are dropped.
    ws, st, df = model.window_size, model.stripe_size, model.anchor_window_down_factor
    out = {}
    for kind, s in (("sh", st), ("sv", st[::-1])):
        out[f"table_{kind}"] = _literal_table(s, df)[None]
        n1, n2 = s[0] * s[1], (s[0] // df) * (s[1] // df)
        nw = (train_size // s[0]) * (train_size // s[1])
        out[f"index_{kind}_a2w"] = torch.zeros(n2, n1, dtype=torch.int64)
        out[f"index_{kind}_w2a"] = torch.zeros(n1, n2, dtype=torch.int64)
        out[f"mask_{kind}_a2w"] = torch.zeros(nw, n2, n1)
        out[f"mask_{kind}_w2a"] = torch.zeros(nw, n1, n2)
    out["table_w"] = _literal_table(ws, 1)[None]
    out["index_w"] = torch.zeros(ws[0] ** 2, ws[0] ** 2, dtype=torch.int64)
    out["mask_w"] = torch.zeros((train_size // ws[0]) ** 2, ws[0] ** 2, ws[0] ** 2)
    return out


def _lightning_ckpt(model: GRL, prefix: str = "model.") -> dict:
    sd = {prefix + k: v.clone() for k, v in model.state_dict().items()}
    sd.update({prefix + k: v for k, v in _official_buffers(model, 32).items()})
    sd.update(
        current_val_metric=torch.tensor([30.1]),
        best_val_metric=torch.tensor([30.2]),
        best_iter=torch.tensor([1000]),
    )
    return {"epoch": 10, "global_step": 1000, "state_dict": sd, "pytorch-lightning_version": "1.5"}


@pytest.mark.parametrize(
    ("name", "extra"),
    [
        ("grl-t.sr_x4", {}),
        ("grl-s.sr_x3", {}),
        ("grl-t.dn_c1s15", {}),
        ("grl-s.jpeg_c3q10", {}),
        ("grl-s.dm", {}),
        ("grl-b.db_gopro", {}),
        ("grl-b.sr_x2", {}),
    ],
)
def test_official_checkpoint_loads_strictly(tmp_path, name, extra) -> None:
    ref = resolve(name)
    overrides = {**(TINY_B if ref.spec.name == "grl-b" else TINY), **extra}
    torch.manual_seed(1)
    source = ref.build(**overrides)
    path = tmp_path / f"{ref.variant.name}.ckpt"
    torch.save(_lightning_ckpt(source), path)
    target = ref.build(**overrides)
    load_weights(target, ref, path)
    for key, value in source.state_dict().items():
        assert torch.equal(target.state_dict()[key], value), key


def test_bsr_gan_checkpoint_keeps_generator_only(tmp_path) -> None:
    ref = resolve("grl-b.bsr_x4")
    torch.manual_seed(2)
    source = ref.build(**TINY_B)
    ckpt = _lightning_ckpt(source, prefix="model_g.")
    disc = {"model_d.conv0.weight": torch.rand(4, 3, 3, 3), "model_d.conv0.bias": torch.rand(4)}
    ckpt["state_dict"].update(disc)
    # The GAN engine also registers the generator under the container `model.model_g.`.
    ckpt["state_dict"].update({"model.model_g." + k: v for k, v in source.state_dict().items()})
    ckpt["state_dict"].update({"model.model_d." + k[8:]: v for k, v in disc.items()})
    path = tmp_path / "bsr_grl_base.ckpt"
    torch.save(ckpt, path)
    target = ref.build(**TINY_B)
    load_weights(target, ref, path)
    assert torch.equal(target.conv_up1.weight, source.conv_up1.weight)


def test_mismatched_checkpoint_names_the_variant_it_fits(tmp_path) -> None:
    torch.manual_seed(3)
    sr = resolve("grl-t.sr_x4").build()  # full size: 0.9 M parameters
    path = tmp_path / "sr_grl_tiny_c3x4.ckpt"
    torch.save(_lightning_ckpt(sr), path)
    dn = resolve("grl-t.dn_c3s25")
    with torch.device("meta"):
        module = dn.build()
    with pytest.raises(WeightsError) as err:
        load_weights(module, dn, path)
    message = str(err.value)
    assert "grl-t.sr_x4" in message
    assert "upsample.up.0.weight" in message
    assert (
        "holds a x4 SR (pixelshuffledirect tail), GRL-T width 64, depths [4, 4, 4, 4], "
        "3 input channels model, but this one is a restoration (no upsampler)"
    ) in message


def test_mismatch_names_size_and_channels() -> None:
    # The hook load_weights calls (its registry search is covered above).
    with torch.device("meta"):
        gray = resolve("grl-b.dn_c1s25").build(**TINY_B)
        colour = resolve("grl-b.dn_c3s25").build(**TINY_B)
        sr = resolve("grl-s.sr_x3").build(**TINY)
    assert colour.describe_mismatch(colour.state_dict()) is None
    assert colour.describe_mismatch(gray.state_dict()) == (
        "the file holds a restoration (no upsampler), GRL width 18, depths [4], 1 input channel, "
        "local conv branch model, but this one is a restoration (no upsampler), GRL width 18, "
        "depths [4], 3 input channels, local conv branch model"
    )
    assert "x3 SR (pixelshuffle tail)" in colour.describe_mismatch(sr.state_dict())


# ---------------------------------------------------------------- ONNX export
# Realistic window/stripe sizes (GRL SR: window 32, stripe 64x64, anchors /4) on a tiny width, so
# an index or mask stored as a constant would dwarf the weights: one stripe index alone is
# 4096 x 256 entries (4 MB as int32) against ~0.18 MB of parameters.
ONNX_TINY = {"embed_dim": 16, "depths": [4], "num_heads_window": [2], "num_heads_stripe": [2]}


def _stored_tensors(graph) -> list:
    import onnx

    arrays = [onnx.numpy_helper.to_array(t) for t in graph.graph.initializer]
    for node in graph.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                arrays.append(onnx.numpy_helper.to_array(attr.t))
    return arrays


_MASK_OPS = ("Constant", "Where")


@pytest.mark.slow
def test_onnx_holds_only_weights_and_matches_pytorch() -> None:
    ort = pytest.importorskip("onnxruntime")
    from restorekit.export.simplify import simplify_graph
    from restorekit.export.trace import INPUT_NAME, onnx_from_model

    ref = resolve("grl-t.sr_x2")
    torch.manual_seed(4)
    model = ref.build(**ONNX_TINY).eval()
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    largest_param = max(p.numel() * p.element_size() for p in model.parameters())
    file_sizes = []
    for tile in ((64, 64), (64, 128)):
        # Same trace (free batch) and simplification (onnxsim constant folding) as restore-export.
        simp = simplify_graph(onnx_from_model(model, tile, 3))
        assert simp.simplified, simp.error
        graph = simp.model
        arrays = _stored_tensors(graph)
        stored = sum(a.nbytes for a in arrays)
        assert stored <= 1.10 * param_bytes, f"{tile}: {stored} tensor bytes, {param_bytes} params"
        # Nothing near one stripe's index or mask (4096 x 256 entries); the largest non-weight
        # tensors are the boolean mask factors (windows x window x window per axis).
        assert max(a.nbytes for a in arrays) <= largest_param, f"{tile}: a large constant is stored"
        ops = collections.Counter(n.op_type for n in graph.graph.node if n.op_type not in _MASK_OPS)
        mask_bytes = sum(n.ByteSize() for n in graph.graph.node if n.op_type in _MASK_OPS)
        file_sizes.append((graph.ByteSize() - mask_bytes, ops))

        session = ort.InferenceSession(
            graph.SerializeToString(), providers=["CPUExecutionProvider"]
        )
        for batch in (1, 2):
            x = torch.rand(batch, 3, *tile, generator=torch.Generator().manual_seed(batch))
            with torch.no_grad():
                expected = model(x).numpy()
            got = session.run(None, {INPUT_NAME: x.numpy()})[0]
            err = abs(got - expected)
            assert err.max() <= 1e-4, (
                f"{tile} batch {batch}: max {err.max():.3g}, mean {err.mean():.3g}, "
                f"99th percentile {float(sorted(err.ravel())[int(0.99 * err.size)]):.3g}"
            )
    # The graph is the same at both tiles; only the boolean mask factors (O(side x window)) grow.
    # At 64x64 the square stripes give horizontal and vertical attention the same mask, which the
    # simplifier then builds once: the mask-building nodes (its boolean factors and the Where that
    # turns them into 0 / -100) are the only ones that may differ.
    (size0, ops0), (size1, ops1) = file_sizes
    assert ops0 == ops1
    assert size1 - size0 <= 512, file_sizes


@pytest.mark.slow
def test_restore_export_pipeline_verifies_tiny_grl(tmp_path) -> None:
    from restorekit.export.pipeline import ExportOptions, export_model

    result = export_model(
        ExportOptions(
            model="grl-t.sr_x2",
            tile=(64, 64),
            batch=2,
            output_dir=tmp_path,
            build_overrides=ONNX_TINY,
        )
    )
    assert result.report.passed
    assert result.report.worst.max_abs <= 1e-4
