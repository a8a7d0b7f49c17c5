"""Conventions every public pp/tl function follows (after scanpy's test_package_structure)."""

import inspect
from types import FunctionType

import pytest
from anndata import AnnData

import omiclip as oc

PUBLIC_FUNCTIONS = [
    pytest.param(getattr(module, name), id=f"{module.__name__.split('.')[-1]}.{name}")
    for module in (oc.pp, oc.tl)
    for name in module.__all__
    if isinstance(getattr(module, name), FunctionType)
]


def test_there_are_functions_to_check():
    assert len(PUBLIC_FUNCTIONS) >= 2


@pytest.mark.parametrize("func", PUBLIC_FUNCTIONS)
def test_first_parameter_is_the_data(func):
    first = next(iter(inspect.signature(func).parameters))
    assert first in {"adata", "data", "sdata", "query", "source", "spatial", "sections"}


@pytest.mark.parametrize("func", PUBLIC_FUNCTIONS)
def test_at_most_three_positional_parameters(func):
    positional = [
        p for p in inspect.signature(func).parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    assert len(positional) <= 3


@pytest.mark.parametrize("func", PUBLIC_FUNCTIONS)
def test_copy_is_keyword_only_and_returns_anndata_or_none(func):
    params = inspect.signature(func).parameters
    if "copy" not in params:
        return
    assert params["copy"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["copy"].default is False
    assert inspect.signature(func).return_annotation in {"AnnData | None", AnnData | None}


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


def test_top_level_namespaces():
    for name in ("pp", "tl", "models", "datasets"):
        assert hasattr(oc, name)
    assert oc.__version__
