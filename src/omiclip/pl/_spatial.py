"""Results with one value per spot, drawn over the tissue: annotation, cell-type proportions, predicted expression."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData
from scipy import sparse

from omiclip._anndata import (
    check_not_empty,
    check_obs_key,
    check_unique_names,
    get_expression,
    get_table,
    restore_names,
)
from omiclip._docs import doc_params
from omiclip._keys import ANNOTATION_KEY, PROPORTIONS_KEY, SPATIAL_KEY, get_record, scores_key
from omiclip.metrics import pearson
from omiclip.pl._utils import (
    ONLY_IMAGE,
    Default,
    check_finite,
    check_layout,
    check_save,
    finish,
    panels,
    renamed,
    spot_panel,
    spots,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from spatialdata import SpatialData


@doc_params
def annotation(
    data: AnnData | SpatialData,
    *,
    color: str | Sequence[str] | None = None,
    key: str = ANNOTATION_KEY,
    labels: bool = True,
    image_key: str | Default | None = ONLY_IMAGE,
    spatial_key: str = SPATIAL_KEY,
    table_key: str | None = None,
    size: float | None = None,
    cmap: str = "viridis",
    ncols: int = 4,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
    save: str | os.PathLike | None = None,
    references: Sequence[str] | None = None,
) -> list[Axes] | Figure | None:
    """Similarity to each reference as a heat map over the tissue, and the label map (:func:`omiclip.tl.annotate`).

    Spots are drawn as circles, grid tiles as squares, at their physical size, over the H&E image when there is
    one. All heat maps share one colour scale, so the panels show which reference wins where. The label map takes
    its colours from ``.uns[f"{key}_colors"]`` and writes them there when they are missing (as scanpy does), so
    scanpy and squidpy plots of ``.obs[key]`` show the same colours.

    Parameters
    ----------
    data
        AnnData or SpatialData annotated by :func:`omiclip.tl.annotate`.
    color
        References whose scores are shown, one panel each (default: all).
    key
        ``key_added`` of the annotation: labels ``.obs[key]``, scores ``.obsm[f"{key}_scores"]``.
    labels
        Add the label map as the last panel.
    {image_key}
    {spatial_key}
    {table_key}
    {size}
    cmap
        Colour map of the heat maps.
    {ncols}
    {ax}
    {show}
    {return_fig}
    {save}
    references
        Old name of ``color`` (deprecated).

    Returns
    -------
    The list of axes (one per reference, then the label map) with ``show=False``; the Figure with
    ``return_fig=True``; else ``None``.
    """
    color = renamed(color, references, new="color", old="references")
    check_save(save)
    check_layout(size=size, ncols=ncols)
    table = get_table(data, table_key)
    check_not_empty(table)
    check_obs_key(table, key, made_by="oc.tl.annotate")
    scores = _obsm_frame(table, scores_key(key), made_by="oc.tl.annotate", column="reference")
    shown = _columns(scores, color, scores_key(key), "color", "references")
    values = scores[shown].to_numpy(dtype=np.float64)
    check_finite(values, f"`.obsm[{scores_key(key)!r}]`")
    where = spots(data, spatial_key=spatial_key, image_key=image_key, table_key=table_key, size=size)

    fig, axes = panels(ax, len(shown) + int(labels), ncols=ncols)
    low, high = float(values.min()), float(values.max())
    score = _score_name(table, key)
    for panel, reference in zip(axes, shown, strict=False):
        values = scores[reference].to_numpy()
        spot_panel(panel, where, values, title=str(reference), label=score, cmap=cmap, vmin=low, vmax=high)
    if labels:
        label = table.obs[key].astype("category")
        spot_panel(axes[-1], where, label, title=key, colors_of=(table, key))
    return finish(fig, axes, show=show, return_fig=return_fig, save=save)


@doc_params
def proportions(
    data: AnnData | SpatialData,
    *,
    color: str | Sequence[str] | None = None,
    key: str = PROPORTIONS_KEY,
    truth_key: str | None = None,
    image_key: str | Default | None = ONLY_IMAGE,
    spatial_key: str = SPATIAL_KEY,
    table_key: str | None = None,
    size: float | None = None,
    cmap: str = "viridis",
    ncols: int = 4,
    ax: Axes | Sequence[Axes] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
    save: str | os.PathLike | None = None,
    cell_types: Sequence[str] | None = None,
) -> list[Axes] | Figure | None:
    """One panel per cell type: its estimated proportion in each spot, optionally beside the ground truth.

    Parameters
    ----------
    data
        AnnData or SpatialData with proportions from :func:`omiclip.tl.decompose`.
    color
        Cell types to show, one panel each (default: all).
    key
        ``.obsm`` DataFrame of proportions, one column per cell type.
    truth_key
        ``.obsm`` DataFrame of known proportions (e.g. ``"true_proportions"`` of the synthetic data): each cell
        type's panel is followed by the truth on the same colour scale, and the estimate's title gives their
        Pearson correlation across spots.
    {image_key}
    {spatial_key}
    {table_key}
    {size}
    {cmap}
    {ncols}
    {ax}
    {show}
    {return_fig}
    {save}
    cell_types
        Old name of ``color`` (deprecated).

    Returns
    -------
    The list of axes (per cell type its estimate, and then its truth) with ``show=False``; the Figure with
    ``return_fig=True``; else ``None``.
    """
    color = renamed(color, cell_types, new="color", old="cell_types")
    check_save(save)
    check_layout(size=size, ncols=ncols)
    table = get_table(data, table_key)
    check_not_empty(table)
    estimate = _obsm_frame(table, key, made_by="oc.tl.decompose", column="cell type")
    shown = _columns(estimate, color, key, "color", "cell types")
    check_finite(estimate[shown].to_numpy(dtype=np.float64), f"`.obsm[{key!r}]`")
    truth = None
    if truth_key is not None:
        truth = _obsm_frame(table, truth_key, made_by=None, column="cell type")
        missing = [c for c in shown if c not in truth.columns]
        if missing:
            raise KeyError(f"`.obsm[{truth_key!r}]` lacks the cell types {missing[:5]}.")
        check_finite(truth[shown].to_numpy(dtype=np.float64), f"`.obsm[{truth_key!r}]`")
    where = spots(data, spatial_key=spatial_key, image_key=image_key, table_key=table_key, size=size)

    fig, axes = panels(ax, len(shown) * (1 if truth is None else 2), ncols=ncols)
    panel = iter(axes)
    for cell_type in shown:
        values = estimate[cell_type].to_numpy(dtype=np.float64)
        high = values.max()
        title = str(cell_type)
        if truth is not None:
            true_values = truth[cell_type].to_numpy(dtype=np.float64)
            high = max(high, true_values.max())
            title = f"{cell_type} (PCC {pearson(values, true_values):.2f})"
        spot_panel(next(panel), where, values, title=title, label="proportion", cmap=cmap, vmin=0.0, vmax=high)
        if truth is not None:
            truth_title = f"{cell_type} (truth)"
            spot_panel(
                next(panel), where, true_values, title=truth_title, label="proportion", cmap=cmap, vmin=0.0, vmax=high
            )
    return finish(fig, axes, show=show, return_fig=return_fig, save=save)


@doc_params
def predex(
    data: AnnData | SpatialData,
    predicted: AnnData | str,
    *,
    color: str | Sequence[str] | None = None,
    layer: str | None = None,
    image_key: str | Default | None = ONLY_IMAGE,
    spatial_key: str = SPATIAL_KEY,
    table_key: str | None = None,
    size: float | None = None,
    cmap: str = "viridis",
    ax: Sequence[Axes] | None = None,
    show: bool | None = None,
    return_fig: bool = False,
    save: str | os.PathLike | None = None,
    genes: Sequence[str] | None = None,
) -> list[Axes] | Figure | None:
    """Measured and predicted expression side by side, one row per gene, with their Pearson correlation.

    Parameters
    ----------
    data
        AnnData or SpatialData whose table holds the measured expression and the positions.
    predicted
        The AnnData returned by :func:`omiclip.tl.predex` (its observations must be in ``data``; only they are
        drawn), or the ``key_added`` it wrote to ``.obsm``.
    color
        Genes to show, one row each (default: the first four predicted).
    layer
        Layer of the measured expression (default ``X``).
    {image_key}
    {spatial_key}
    {table_key}
    {size}
    {cmap}
    ax
        Axes to draw into, two per gene (default: a new figure).
    {show}
    {return_fig}
    {save}
    genes
        Old name of ``color`` (deprecated).

    Returns
    -------
    The list of axes (per gene the measured, then the predicted expression, titled with the PCC) with
    ``show=False``; the Figure with ``return_fig=True``; else ``None``.
    """
    genes = renamed(color, genes, new="color", old="genes")
    check_save(save)
    check_layout(size=size)
    table = get_table(data, table_key)
    check_not_empty(table)
    prediction = _prediction(table, predicted)
    if len(prediction) == 0:
        raise ValueError("`predicted` has no observations (n_obs == 0).")
    # genes are looked up by name in both
    for names, whose in ((table.var_names, "the data"), (prediction.columns, "the prediction")):
        if not names.is_unique:
            repeated = list(names[names.duplicated()].unique()[:3])
            raise ValueError(
                f"The gene names of {whose} must be unique, but {repeated} repeat; call `.var_names_make_unique()`."
            )
    genes = list(prediction.columns[:4]) if genes is None else ([genes] if isinstance(genes, str) else list(genes))
    if not genes:
        raise ValueError("`color` is empty; choose genes of the prediction.")
    not_predicted = [g for g in genes if g not in prediction.columns]
    if not_predicted:
        raise KeyError(f"Genes {not_predicted[:5]} were not predicted; pass them as `genes=` to `oc.tl.predex`.")
    not_measured = [g for g in genes if g not in table.var_names]
    if not_measured:
        raise KeyError(f"Genes {not_measured[:5]} are not measured in the data (its `var_names`).")
    check_unique_names(table)
    rows = table.obs_names.get_indexer(prediction.index)
    if (rows < 0).any():
        raise KeyError(
            f"{int((rows < 0).sum())} predicted observations are not in the data (e.g. "
            f"{list(prediction.index[rows < 0][:3])}); pass the table the prediction was made for."
        )
    measured = _expression(table, genes, layer)[rows]
    check_finite(measured, "`.X`" if layer is None else f"`.layers[{layer!r}]`")
    expected = prediction[genes].to_numpy(dtype=np.float64)
    check_finite(expected, f"`.obsm[{predicted!r}]`" if isinstance(predicted, str) else "`predicted.X`")
    where = spots(data, spatial_key=spatial_key, image_key=image_key, table_key=table_key, size=size)
    where = dataclasses.replace(where, xy=where.xy[rows])

    fig, axes = panels(ax, 2 * len(genes), ncols=2)
    matrix = "X" if layer is None else layer
    for i, gene in enumerate(genes):
        spot_panel(
            axes[2 * i], where, measured[:, i], title=f"{gene} measured", label=f"expression ({matrix})", cmap=cmap
        )
        title = f"{gene} predicted (PCC {pearson(measured[:, i], expected[:, i]):.2f})"
        spot_panel(axes[2 * i + 1], where, expected[:, i], title=title, label="predicted expression", cmap=cmap)
    return finish(fig, axes, show=show, return_fig=return_fig, save=save)


def _obsm_frame(table: AnnData, key: str, *, made_by: str | None, column: str) -> pd.DataFrame:
    if key not in table.obsm:
        raise KeyError(f"Did not find {key!r} in `.obsm`." + (f" Run `{made_by}` first." if made_by else ""))
    frame = table.obsm[key]
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"`.obsm[{key!r}]` must be a DataFrame with one column per {column}.")
    return restore_names(frame)


def _score_name(table: AnnData, key: str) -> str:
    """What the annotation scores are, for the colour bar: similarities, or probabilities with a temperature."""
    try:
        temperature = get_record(table, "annotate", key, made_by="oc.tl.annotate").get("temperature", "none")
    except KeyError:
        return "score"
    return "cosine similarity" if str(temperature) == "none" else "softmax probability"


def _columns(frame: pd.DataFrame, chosen: Sequence[str] | None, key: str, param: str, what: str) -> list:
    """The columns to draw, one panel each: ``chosen`` (the argument ``param``: ``what``), or all of ``.obsm[key]``."""
    if len(frame.columns) == 0:
        raise ValueError(f"`.obsm[{key!r}]` has no columns, so there are no {what} to show.")
    if chosen is None:
        return list(frame.columns)
    chosen = [chosen] if isinstance(chosen, str) else list(chosen)
    if not chosen:
        raise ValueError(f"`{param}` is empty; choose from {list(frame.columns)[:10]}.")
    missing = [c for c in chosen if c not in frame.columns]
    if missing:
        raise KeyError(f"Unknown {what} {missing[:5]}; available: {list(frame.columns)[:10]}.")
    return chosen


def _prediction(table: AnnData, predicted: AnnData | str) -> pd.DataFrame:
    """Predicted expression as a DataFrame, observations × genes."""
    if isinstance(predicted, str):
        return _obsm_frame(table, predicted, made_by="oc.tl.predex(..., key_added=...)", column="gene")
    if not isinstance(predicted, AnnData):
        raise TypeError(
            f"`predicted` must be the AnnData returned by `oc.tl.predex` or an `.obsm` key, got {predicted!r}."
        )
    matrix = predicted.X.toarray() if sparse.issparse(predicted.X) else np.asarray(predicted.X)
    return pd.DataFrame(matrix, index=predicted.obs_names, columns=predicted.var_names)


def _expression(table: AnnData, genes: list[str], layer: str | None) -> np.ndarray:
    check_unique_names(table, "var")
    selected = get_expression(table, layer)[:, table.var_names.get_indexer(genes)]
    return np.asarray(selected.toarray() if sparse.issparse(selected) else selected, dtype=np.float64)
