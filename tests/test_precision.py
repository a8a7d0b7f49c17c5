"""bf16 on CPU: weights and inputs cast (a copy), outputs normalised in fp32; ``"auto"`` follows the CPU flags.

Accuracy, not speed, is tested here (speed: ``benchmarks/embed_images.py``). The threshold is the issue's
target for the full model (per-row cosine to fp32 >= 0.999); the tiny random model measures ~0.99995.
"""

import numpy as np
import pytest
import torch

import omiclip as oc
from omiclip.models import _encoder
from omiclip.models._encoder import cpu_has_native_bf16

SENTENCES = ["EPCAM KRT8 KRT18 ERBB2 GRB7 CDH1 KRT19", "COL1A1 COL1A2 DCN LUM POSTN", "CD3D CD2 IL7R PTPRC"] * 8
MIN_COSINE = 0.999


def _row_cosines(a, b):
    return np.sum(a * b, axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.fixture(scope="module")
def tiles():
    rng = np.random.default_rng(0)
    smooth = rng.integers(60, 200, (24, 8, 8, 3)).repeat(8, axis=1).repeat(8, axis=2)  # blocky tissue-like tiles
    return np.clip(smooth + rng.integers(-20, 20, smooth.shape), 0, 255).astype(np.uint8)


class TestBf16OnCpu:
    def test_text_matches_fp32(self, tiny):
        fp32 = tiny.encode_text(SENTENCES)
        bf16 = tiny.encode_text(SENTENCES, precision="bf16", batch_size=5)
        assert bf16.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(bf16, axis=1), 1, rtol=1e-6)  # normalised in fp32
        assert _row_cosines(fp32, bf16).min() >= MIN_COSINE
        assert not np.array_equal(fp32, bf16)  # it did run in bf16

    def test_images_match_fp32(self, tiny, tiles):
        fp32 = tiny.encode_images(tiles)
        bf16 = tiny.encode_images(tiles, precision="bf16", batch_size=7)
        np.testing.assert_allclose(np.linalg.norm(bf16, axis=1), 1, rtol=1e-6)
        assert _row_cosines(fp32, bf16).min() >= MIN_COSINE
        assert not np.array_equal(fp32, bf16)

    def test_the_model_stays_fp32(self, tiny, tiles):
        before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
        fp32 = tiny.encode_images(tiles[:4])
        tiny.encode_images(tiles[:4], precision="bf16")
        tiny.encode_text(SENTENCES[:3], precision="bf16")
        after = tiny.model.state_dict()
        assert all(after[k].dtype == v.dtype and torch.equal(after[k], v) for k, v in before.items())
        np.testing.assert_array_equal(tiny.encode_images(tiles[:4]), fp32)

    def test_embed_records_the_precision_used(self, tiny, section):
        oc.pp.gene_sentences(section)
        oc.tl.embed(section, model=tiny, precision="bf16", key_added="bf16", progress=False)
        oc.tl.embed(section, model=tiny, precision="auto", key_added="auto", progress=False)
        oc.tl.embed(section, model=tiny, key_added="fp32", progress=False)
        table = section.tables["table"]
        assert _row_cosines(table.obsm["fp32"], table.obsm["bf16"]).min() >= MIN_COSINE
        runs = table.uns["omiclip"]["embed"]
        assert (runs["bf16"]["precision"], runs["bf16"]["precision_used"]) == ("bf16", "bf16")
        expected_auto = "bf16" if cpu_has_native_bf16() else "fp32"
        assert (runs["auto"]["precision"], runs["auto"]["precision_used"]) == ("auto", expected_auto)

    def test_image_embed_in_bf16(self, tiny, section):
        oc.tl.embed(section, modality="image", model=tiny, precision="bf16", key_added="b", progress=False)
        oc.tl.embed(section, modality="image", model=tiny, key_added="f", progress=False)
        table = section.tables["table"]
        assert _row_cosines(table.obsm["f"], table.obsm["b"]).min() >= MIN_COSINE

    def test_dask_task_in_bf16(self, tiles):
        import zarr

        from omiclip._core.tiling import TileWindows
        from omiclip.tl._distributed import WorkerModel, ZarrRegions, _embed_task

        image = zarr.zeros((3, 64, 64), dtype="uint8", chunks=(3, 32, 32))
        image[:] = tiles[0].repeat(8, axis=0)[:64].repeat(1, axis=1)[:, :64].transpose(2, 0, 1)
        windows = TileWindows(np.array([[0, 0], [16, 16], [32, 8], [40, 40]]), 24, 24, (64, 64))
        model = WorkerModel("omiclip-tiny", None, 0, "cpu")
        fp32 = _embed_task(model, ZarrRegions(image), windows, 3, "fp32")
        bf16 = _embed_task(model, ZarrRegions(image), windows, 3, "bf16")
        assert _row_cosines(fp32, bf16).min() >= MIN_COSINE and not np.array_equal(fp32, bf16)

    def test_fp16_and_unknown_precisions_are_refused(self, tiny):
        with pytest.raises(ValueError, match="precision='fp16' is not available on cpu"):
            tiny.encode_text(SENTENCES, precision="fp16")
        with pytest.raises(ValueError, match="precision must be one of.*'auto'; got 'int8'"):
            tiny.encode_text(SENTENCES, precision="int8")


CPUINFO = {
    "xeon_amx": ("flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n", True),
    "zen4_avx512_bf16": ("flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n", True),
    "zen2_avx2": ("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx avx2 fma\n", False),
    "skylake_avx512": ("flags\t\t: avx2 avx512f avx512bw avx512_vnni\n", False),
    "arm_bf16": ("Features\t: fp asimd sve bf16 i8mm\n", True),
    "arm_without": ("Features\t: fp asimd\n", False),
}


class TestAuto:
    @pytest.mark.parametrize("case", list(CPUINFO))
    def test_native_bf16_is_read_from_the_cpu_flags(self, case, tmp_path):
        text, expected = CPUINFO[case]
        (tmp_path / "cpuinfo").write_text(text)
        assert cpu_has_native_bf16(tmp_path / "cpuinfo") is expected

    def test_without_cpuinfo_torch_decides(self, tmp_path, monkeypatch):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
        assert cpu_has_native_bf16(tmp_path / "absent") is True
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
        assert cpu_has_native_bf16(tmp_path / "absent2") is False

    @pytest.mark.parametrize(("native", "expected"), [(True, "bf16"), (False, "fp32")])
    def test_auto_on_cpu_follows_the_flags(self, tiny, monkeypatch, native, expected):
        monkeypatch.setattr(_encoder, "cpu_has_native_bf16", lambda: native)
        assert tiny.resolve_precision("auto") == expected
        assert tiny.resolve_precision("fp32") == "fp32" and tiny.resolve_precision("bf16") == "bf16"

    def test_this_machine_resolves_as_its_flags_say(self, tiny):
        flags = open("/proc/cpuinfo").read() if __import__("os").path.exists("/proc/cpuinfo") else ""
        native = any(flag in flags.split() for flag in ("amx_bf16", "avx512_bf16", "bf16"))
        assert tiny.resolve_precision("auto") == ("bf16" if native else "fp32")

    def test_full_model_in_fp32_hints_once_where_bf16_is_native(self, tiny, monkeypatch):
        messages = []
        monkeypatch.setattr(_encoder, "cpu_has_native_bf16", lambda: True)
        monkeypatch.setattr(_encoder, "_hinted_auto", False)
        monkeypatch.setattr(_encoder.logg, "info", lambda message, **_: messages.append(message))
        tiny.encode_text(SENTENCES[:2])
        assert messages == []  # the tiny model: nothing to gain worth a message
        monkeypatch.setattr(tiny, "architecture", "coca_ViT-L-14")
        tiny.encode_text(SENTENCES[:2])
        tiny.encode_text(SENTENCES[:2])
        tiny.encode_text(SENTENCES[:2], precision="bf16")
        assert len(messages) == 1 and "precision='auto'" in messages[0] and "3.8x" in messages[0]
