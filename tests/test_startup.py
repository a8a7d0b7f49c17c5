"""Start-up: ``import omiclip`` and the command line's ``--help``/``--version`` import no heavy library.

Each check runs in a fresh interpreter: this test process has long imported everything.
"""

import json
import subprocess
import sys

import pytest

import omiclip as oc

HEAVY = ["anndata", "dask", "open_clip", "scanpy", "spatialdata", "squidpy", "torch"]


def _heavy_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter has imported after running ``code``."""
    script = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_import_omiclip_imports_no_heavy_library():
    assert _heavy_after("import omiclip") == []


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_command_line_answers_without_heavy_libraries(flag):
    code = f"from omiclip.__main__ import main\ntry:\n    main([{flag!r}])\nexcept SystemExit as exit_:\n    assert exit_.code == 0"
    assert _heavy_after(code) == []


def test_version_is_the_package_version(capsys):
    from omiclip.__main__ import main

    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"omiclip {oc.__version__}"


@pytest.mark.parametrize("name", ["datasets", "io", "metrics", "models", "pl", "pp", "tl"])
def test_every_public_name_resolves(name):
    module = getattr(oc, name)
    assert sorted(dir(module)) == sorted(module.__all__)
    for attribute in module.__all__:
        value = getattr(module, attribute)
        assert getattr(value, "__name__", attribute) == attribute  # MODELS is a dict
    with pytest.raises(AttributeError):
        module.not_a_function  # noqa: B018


def test_lazy_names_are_the_real_objects():
    from omiclip.pp import gene_sentences
    from omiclip.pp._gene_sentences import gene_sentences as defined
    from omiclip.tl._embed import embed

    assert gene_sentences is defined and oc.tl.embed is embed
    assert sorted(dir(oc)) == sorted(oc.__all__) == ["datasets", "io", "metrics", "models", "pl", "pp", "tl"]


def test_dask_embedding_task_imports_only_what_it_needs():
    # what a Dask worker runs for `oc.tl.embed(..., client=)`: load the model, read windows from zarr, encode
    code = """
import numpy as np, zarr
from omiclip._core.distributed import WorkerModel, ZarrRegions, _embed_task
from omiclip._core.tiling import TileWindows
image = zarr.zeros((3, 64, 64), dtype="uint8", chunks=(3, 32, 32))
image[:] = np.random.default_rng(0).integers(0, 255, (3, 64, 64), dtype=np.uint8)
windows = TileWindows(np.array([[0, 0], [16, 16], [32, 8]]), 24, 24, (64, 64))
embeddings = _embed_task(WorkerModel("omiclip-tiny", None, 0, "cpu"), ZarrRegions(image), windows, 2, "fp32")
assert embeddings.shape == (3, 128) and np.allclose(np.linalg.norm(embeddings, axis=1), 1, atol=1e-5)
"""
    assert _heavy_after(code) == ["open_clip", "torch"]
