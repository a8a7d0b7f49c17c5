"""Conventions every public pp/tl/pl function follows (after scanpy's test_package_structure)."""

import inspect
from types import FunctionType

import pytest

import omiclip as oc

PUBLIC_FUNCTIONS = [
    pytest.param(getattr(module, name), id=f"{module.__name__.split('.')[-1]}.{name}")
    for module in (oc.pp, oc.tl, oc.pl)
    for name in module.__all__
    if isinstance(getattr(module, name), FunctionType)
]
DATA = "AnnData | SpatialData"
# the first parameter's type where it is not one AnnData or SpatialData object
OTHER_DATA = {
    "align_stack": f"Sequence[{DATA}]",
    "alignment_stack": f"Sequence[{DATA}]",
    "embed_cohort": "Sequence[str | os.PathLike] | str | os.PathLike",
    "finetune": "SpatialData | Sequence[SpatialData]",
    "pcs_as_rgb": "np.ndarray",
}


def test_there_are_functions_to_check():
    assert len(PUBLIC_FUNCTIONS) >= 20


@pytest.mark.parametrize("func", PUBLIC_FUNCTIONS)
def test_first_parameter_is_the_data(func):
    first = next(iter(inspect.signature(func).parameters))
    assert first in {"adata", "data", "sdata", "query", "source", "spatial", "sections", "embedding"}


@pytest.mark.parametrize("func", PUBLIC_FUNCTIONS)
def test_the_data_is_typed(func):
    data = next(iter(inspect.signature(func).parameters.values()))
    assert data.annotation == OTHER_DATA.get(func.__name__, DATA)
    if func.__name__ in OTHER_DATA:
        return
    # a second data argument (the reference, the target) is typed alike
    second = list(inspect.signature(func).parameters.values())[1]
    if second.kind is second.POSITIONAL_OR_KEYWORD and second.name in {"reference", "target"}:
        assert second.annotation == DATA


@pytest.mark.parametrize("func", PUBLIC_FUNCTIONS)
def test_return_is_annotated(func):
    assert inspect.signature(func).return_annotation is not inspect.Signature.empty


@pytest.mark.parametrize("func", PUBLIC_FUNCTIONS)
def test_at_most_three_positional_parameters(func):
    positional = [
        p for p in inspect.signature(func).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    assert len(positional) <= 3


@pytest.mark.parametrize("func", PUBLIC_FUNCTIONS)
def test_copy_is_keyword_only_and_returns_what_was_given(func):
    signature = inspect.signature(func)
    if "copy" not in signature.parameters:
        return
    assert signature.parameters["copy"].kind is inspect.Parameter.KEYWORD_ONLY
    assert signature.parameters["copy"].default is False
    # a copy of the data comes back: SpatialData for SpatialData
    assert next(iter(signature.parameters.values())).annotation == DATA
    # predex returns its prediction (an AnnData) when it does not return the copy
    assert signature.return_annotation == (DATA if func.__name__ == "predex" else f"{DATA} | None")


@pytest.mark.parametrize("func", PUBLIC_FUNCTIONS)
def test_docstring_documents_every_parameter_and_what_is_written(func):
    doc = inspect.getdoc(func)
    assert doc and "Parameters\n----------" in doc and "Returns\n-------" in doc
    section = doc.split("Parameters\n----------")[1].split("Returns\n-------")[0]
    documented = {
        name.strip().lstrip("*")
        for line in section.splitlines()
        if line and not line[0].isspace()
        for name in line.split(",")
    }
    assert set(inspect.signature(func).parameters) <= documented
    assert "{" not in "".join(line for line in section.splitlines() if line and not line[0].isspace())


def test_top_level_namespaces():
    for name in ("pp", "tl", "pl", "models", "datasets"):
        assert hasattr(oc, name)
    assert oc.__version__
