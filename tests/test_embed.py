import numpy as np
import pytest

import omiclip as oc


@pytest.fixture
def with_sentences(spots):
    oc.pp.gene_sentences(spots)
    return spots


def test_text_embeddings_written_and_recorded(with_sentences, tiny):
    adata = with_sentences
    assert oc.tl.embed(adata, model=tiny, progress=False) is None
    emb = adata.obsm["X_omiclip_text"]
    assert emb.shape == (adata.n_obs, tiny.embed_dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    np.testing.assert_array_equal(emb, tiny.encode_text(adata.obs["gene_sentence"].tolist()))
    record = adata.uns["omiclip"]["embed"]["X_omiclip_text"]
    assert record["model"] == "omiclip-tiny" and record["seed"] == 0 and record["checkpoint"] is None
    np.testing.assert_array_equal(record["n_genes_in_context"], tiny.genes_in_context(adata.obs["gene_sentence"]))


def test_model_by_name_equals_loaded_model(with_sentences, tiny):
    oc.tl.embed(with_sentences, model="omiclip-tiny", device="cpu", key_added="by_name", progress=False)
    oc.tl.embed(with_sentences, model=tiny, progress=False)
    np.testing.assert_array_equal(with_sentences.obsm["by_name"], with_sentences.obsm["X_omiclip_text"])


def test_same_sentence_same_embedding_and_domains_cluster(with_sentences, tiny):
    # even random text towers map shared words to shared directions: same-domain spots are closer
    oc.tl.embed(with_sentences, model=tiny, progress=False)
    emb = with_sentences.obsm["X_omiclip_text"]
    domain = with_sentences.obs["domain"].to_numpy()
    sim = emb @ emb.T
    same = domain[:, None] == domain[None, :]
    np.fill_diagonal(same, False)
    different = domain[:, None] != domain[None, :]
    assert sim[same].mean() > sim[different].mean()


def test_copy_and_spatialdata(section, tiny):
    oc.pp.gene_sentences(section)
    result = oc.tl.embed(section, model=tiny, copy=True, progress=False)
    assert "X_omiclip_text" in result.tables["table"].obsm
    assert "X_omiclip_text" not in section.tables["table"].obsm


def test_missing_sentences_says_what_to_run(spots, tiny):
    with pytest.raises(KeyError, match=r"Run `oc.pp.gene_sentences` first"):
        oc.tl.embed(spots, model=tiny)
    spots.obs["gene_sentence"] = None
    with pytest.raises(ValueError, match="missing sentences"):
        oc.tl.embed(spots, model=tiny)
    assert "X_omiclip_text" not in spots.obsm


def test_bad_arguments(with_sentences, tiny):
    with pytest.raises(ValueError, match="`modality` must be one of"):
        oc.tl.embed(with_sentences, modality="audio", model=tiny)
    with pytest.raises(ValueError, match="checkpoint` applies to a model name"):
        oc.tl.embed(with_sentences, model=tiny, checkpoint="x.pt")
    with pytest.raises(ValueError, match="batch_size"):
        oc.tl.embed(with_sentences, model=tiny, batch_size=0)
