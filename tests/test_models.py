import numpy as np
import open_clip
import pytest
import torch

import omiclip as oc
from omiclip.models import _checkpoint
from omiclip.models._load import build_model
from omiclip.models._registry import get_spec

SENTENCES = ["EPCAM KRT8 KRT18 ERBB2 GRB7", "COL1A1 COL1A2 DCN LUM", "CD3D CD2 IL7R", "EPCAM KRT8 KRT18 ERBB2 GRB7"]


class TestTinyModel:
    def test_seeded_random_init(self, tiny):
        again = oc.models.load("omiclip-tiny")
        other = oc.models.load("omiclip-tiny", seed=1)
        again_weights = again.model.state_dict()
        for name, weight in tiny.model.state_dict().items():
            assert torch.equal(weight, again_weights[name]), name
        assert not torch.equal(tiny.model.visual.conv1.weight, other.model.visual.conv1.weight)

    def test_text_embeddings(self, tiny):
        emb = tiny.encode_text(SENTENCES, batch_size=3)
        assert emb.shape == (4, tiny.embed_dim) and emb.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
        np.testing.assert_array_equal(tiny.encode_text(SENTENCES, batch_size=3), emb)  # same input, same output
        np.testing.assert_allclose(emb[0], emb[3], atol=1e-5)
        assert emb[0] @ emb[1] < 0.999
        np.testing.assert_allclose(tiny.encode_text(SENTENCES, batch_size=1), emb, atol=1e-5)

    def test_image_embeddings_any_size(self, tiny):
        rng = np.random.default_rng(0)
        tiles = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in [(17, 17), (224, 224), (300, 250)]]
        emb = tiny.encode_images(tiles, batch_size=2)
        assert emb.shape == (3, tiny.embed_dim) and emb.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
        np.testing.assert_array_equal(tiny.encode_images(tiles, batch_size=2), emb)
        np.testing.assert_allclose(tiny.encode_images(tiles[:1]), emb[:1], atol=1e-5)

    def test_bad_images(self, tiny):
        with pytest.raises(ValueError, match="RGB"):
            tiny.encode_images(np.zeros((2, 10, 10), dtype=np.uint8))
        with pytest.raises(ValueError, match="uint8"):
            tiny.encode_images(np.zeros((1, 10, 10, 3), dtype=np.float32))

    def test_precision_and_device_errors(self, tiny):
        with pytest.raises(ValueError, match="autocast for CUDA"):
            tiny.encode_text(SENTENCES, precision="fp16")
        with pytest.raises(ValueError, match="precision must be"):
            tiny.encode_text(SENTENCES, precision="int8")
        if not torch.cuda.is_available():
            with pytest.raises(ValueError, match="no CUDA device"):
                oc.models.load("omiclip-tiny", device="cuda")


class TestOfficialCompatibility:
    def test_tokenizer_is_open_clips(self, tiny):
        reference = open_clip.get_tokenizer("coca_ViT-L-14")
        assert tiny.context_length == 76
        assert torch.equal(tiny.tokenizer(SENTENCES), reference(SENTENCES))

    def test_preprocessing_is_the_official_eval_transform(self, tiny):
        from PIL import Image

        official = open_clip.image_transform(
            224, is_train=False, mean=open_clip.OPENAI_DATASET_MEAN, std=open_clip.OPENAI_DATASET_STD
        )
        tile = np.random.default_rng(1).integers(0, 256, (16, 16, 3), dtype=np.uint8)
        assert torch.equal(tiny.preprocess_tiles([tile])[0], official(Image.fromarray(tile)))

    def test_genes_in_context_matches_truncation(self, tiny):
        genes = "ERBB2 GRB7 KRT19 COL1A1 MUC1 SCGB2A2 CD74 HLA-DRA MGP KRT8 TFF1 AZGP1 SPDEF".split() * 4
        counts = oc.models.genes_in_context([" ".join(genes[:n]) for n in (1, 5, 20, 52)])
        for n, kept in zip((1, 5, 20, 52), counts, strict=False):
            tokens = lambda k: len(tiny.tokenizer.encode(" ".join(genes[:k])))  # noqa: E731
            assert tokens(kept) <= 74
            assert kept == n or tokens(kept + 1) > 74
        assert counts[-1] < 30  # most of a 50-gene sentence is cut, as in the official model

    def test_architecture_matches_coca_vit_l_14(self):
        with torch.device("meta"):  # shapes only: no memory, no time
            ours, _ = build_model(get_spec("omiclip"), device="meta")
            reference = open_clip.create_model("coca_ViT-L-14", pretrained=None, device="meta")
        ours_shapes = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
        assert ours_shapes == {k: tuple(v.shape) for k, v in reference.state_dict().items()}
        assert ours.text.text_projection.shape[1] == 768
        assert sum(p.numel() for p in ours.parameters()) == 638_450_177

    @pytest.mark.slow
    def test_full_model_checkpoint_round_trip(self, tmp_path):
        torch.manual_seed(0)
        model = open_clip.create_model("coca_ViT-L-14", pretrained=None)
        path = tmp_path / "checkpoint.pt"
        state = {f"module.{k}": v for k, v in model.state_dict().items()}
        torch.save({"epoch": 10, "name": "run", "state_dict": state, "optimizer": {}}, path)
        encoder = oc.models.load("omiclip", checkpoint=path, device="cpu")
        tokens = open_clip.get_tokenizer("coca_ViT-L-14")(SENTENCES[:2])
        with torch.inference_mode():
            expected = model.eval().encode_text(tokens, normalize=True).numpy()
        np.testing.assert_allclose(encoder.encode_text(SENTENCES[:2]), expected, atol=1e-5)


class TestCheckpoints:
    @pytest.fixture
    def saved(self, tiny, tmp_path):
        return oc.models.save_checkpoint(tmp_path / "tiny.pt", tiny.model, model_name="omiclip-tiny")

    def test_round_trip_by_path_and_by_name(self, tiny, saved):
        expected = tiny.encode_text(SENTENCES)
        by_path = oc.models.load(saved)
        by_name = oc.models.load("omiclip-tiny", checkpoint=saved)
        assert by_path.name == "omiclip-tiny" and by_path.checkpoint == saved and by_path.seed is None
        np.testing.assert_array_equal(by_path.encode_text(SENTENCES), expected)
        np.testing.assert_array_equal(by_name.encode_text(SENTENCES), expected)
        assert by_path.checkpoint_sha256 == _checkpoint.sha256(saved) and len(by_path.checkpoint_sha256) == 64

    @pytest.mark.parametrize("layout", ["openclip_training", "bare"])
    def test_openclip_layouts(self, tiny, tmp_path, layout):
        state = tiny.model.state_dict()
        if layout == "openclip_training":
            content = {"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}, "optimizer": {"x": 1}}
        else:
            content = dict(state)
        torch.save(content, tmp_path / "c.pt")
        loaded = oc.models.load("omiclip-tiny", checkpoint=tmp_path / "c.pt")
        np.testing.assert_array_equal(loaded.encode_text(SENTENCES), tiny.encode_text(SENTENCES))

    def test_wrong_architecture_lists_keys(self, tiny, tmp_path):
        state = dict(tiny.model.state_dict())
        state["extra.weight"] = state.pop("text.token_embedding.weight")
        torch.save({"state_dict": state}, tmp_path / "bad.pt")
        with pytest.raises(ValueError, match=r"1 missing \(e.g. text.token_embedding.weight\); 1 unexpected"):
            oc.models.load("omiclip-tiny", checkpoint=tmp_path / "bad.pt")

    def test_tiny_checkpoint_is_not_official(self, saved, tmp_path):
        with pytest.raises(ValueError, match="saved from model 'omiclip-tiny', not 'omiclip'"):
            oc.models.load("omiclip", checkpoint=saved)
        bare = tmp_path / "bare.pt"
        torch.save(torch.load(saved, weights_only=False)["state_dict"], bare)
        with pytest.raises(ValueError, match="does not fit architecture 'coca_ViT-L-14'.*wrong shape"):
            oc.models.load("omiclip", checkpoint=bare)

    def test_unreadable_checkpoint(self, tmp_path):
        (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
        with pytest.raises(ValueError, match="Could not read checkpoint"):
            oc.models.load("omiclip-tiny", checkpoint=tmp_path / "junk.pt")

    def test_missing_official_checkpoint_says_where_to_put_it(self, monkeypatch, tmp_path):
        monkeypatch.delenv(_checkpoint.CHECKPOINT_ENV, raising=False)
        monkeypatch.setattr(_checkpoint, "DEFAULT_CHECKPOINT", tmp_path / "nowhere" / "checkpoint.pt")
        with pytest.raises(FileNotFoundError, match="WangGuangyuLab/Loki.*OMICLIP_CHECKPOINT"):
            oc.models.load("omiclip")
        with pytest.raises(FileNotFoundError, match="does not exist"):
            oc.models.load("omiclip", checkpoint=tmp_path / "missing.pt")

    def test_checkpoint_from_environment(self, monkeypatch, saved, tiny):
        monkeypatch.setenv(_checkpoint.CHECKPOINT_ENV, str(saved))
        monkeypatch.setattr(_checkpoint, "DEFAULT_CHECKPOINT", saved.parent / "none.pt")
        # the environment names a tiny checkpoint: loading it as the official model must refuse
        with pytest.raises(ValueError, match="not 'omiclip'"):
            oc.models.load("omiclip")

    def test_unknown_name(self):
        with pytest.raises(ValueError, match="Unknown model 'clip'.*omiclip-tiny"):
            oc.models.load("clip")

    @pytest.mark.parametrize("name", ["nope.pt", "weights/tuned", "model.safetensors"])
    def test_missing_checkpoint_path_is_a_missing_file(self, monkeypatch, tmp_path, name):
        monkeypatch.chdir(tmp_path)
        with pytest.raises(FileNotFoundError, match=rf"Checkpoint file '{name}' does not exist.*omiclip-tiny"):
            oc.models.load(name)

    def test_folder_as_model_is_not_a_file(self, tmp_path):
        with pytest.raises(FileNotFoundError, match="is not a file"):
            oc.models.load(tmp_path)
