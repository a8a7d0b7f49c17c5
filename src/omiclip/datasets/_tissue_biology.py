"""Cell types, marker genes, domains and morphology of the synthetic breast tissue.

Real gene symbols so that sentences look like the ones OmiCLIP was trained on; the numbers are
plausible orders of magnitude, not fitted to any data set.
"""

from __future__ import annotations

from dataclasses import dataclass

# cell type -> marker genes (strongly expressed in that type only)
MARKERS: dict[str, tuple[str, ...]] = {
    "tumor": ("EPCAM", "KRT8", "KRT18", "KRT19", "ERBB2", "GRB7", "CDH1", "MUC1", "TFF1", "MKI67"),
    "fibroblast": ("COL1A1", "COL1A2", "COL3A1", "DCN", "LUM", "FAP", "PDGFRA", "SFRP2", "POSTN", "FBLN1"),
    "T cell": ("CD3D", "CD3G", "CD2", "CD8A", "IL7R", "CCL5", "GZMK", "TRAC", "CD247", "LCK"),
    "B cell": ("MS4A1", "CD79A", "CD19", "BANK1", "IGHM", "JCHAIN", "MZB1", "IGKC", "CD22", "PAX5"),
    "macrophage": ("CD68", "CD163", "C1QA", "C1QB", "LYZ", "AIF1", "CSF1R", "MRC1", "FCGR3A", "TYROBP"),
    "endothelial": ("PECAM1", "VWF", "CDH5", "PLVAP", "EMCN", "CLDN5", "RAMP2", "FLT1", "KDR", "AQP1"),
    "adipocyte": ("ADIPOQ", "PLIN1", "LEP", "FABP4", "CIDEA", "LPL", "PLIN4", "GPD1", "CFD", "SAA1"),
}

# expressed by every cell; some of them are on Loki's exclusion lists (housekeeping, names with "-")
BACKGROUND_GENES: tuple[str, ...] = (
    "ACTB", "GAPDH", "B2M", "EEF1A1", "TMSB4X", "FTL", "FTH1", "RPL13", "RPS18", "RPLP0", "MALAT1", "NEAT1",
    "MT-CO1", "MT-CO2", "MT-ND4", "MT-ATP6", "HLA-B", "HLA-DRA", "TPT1", "UBC", "MYL6", "S100A6", "VIM",
    "SPARC", "IFITM3", "CD74", "APOE", "CST3", "SERPINA3", "AZGP1", "PIP", "SCGB2A2", "MGP", "TIMP1",
    "IGFBP7", "CALD1", "TAGLN", "ACTA2", "MYH11", "KRT5", "KRT14", "KRT17", "ESR1", "PGR", "AR", "FOXA1",
    "GATA3", "XBP1", "AGR2", "SPDEF", "TFF3", "CCND1", "MYC", "TOP2A", "BIRC5", "CDK1", "PCNA", "STMN1",
    "H2AZ1", "HMGB2", "TUBA1B", "TUBB", "ENO1", "PKM", "LDHA", "PGK1", "ALDOA", "TPI1", "NPM1", "HSP90AB1",
    "HSPA8", "CALR", "PDIA3", "P4HB", "SEC61B", "SSR4", "CD63", "LGALS1", "LGALS3", "ANXA1", "ANXA2",
    "S100A10", "S100A11", "CFL1", "PFN1", "ARPC2", "CAPG", "SH3BGRL3", "TMSB10", "SRGN", "LAPTM5", "CXCL14",
    "CXCL12", "CCL19", "CCL21", "IGFBP5", "IGFBP4", "MMP2", "MMP11", "CTSK", "CTSB", "CTSD", "SPP1",
    "CHI3L1", "NUPR1", "DSP", "CLDN4", "CLDN3", "SLC39A6", "ELF3", "CD24", "SCD", "FASN", "ACACA", "ACLY",
    "INSIG1", "LDLR", "HMGCS1", "SQLE", "IDI1", "FDFT1", "SOX4", "ID1", "ID3", "JUN", "FOS", "EGR1", "ZFP36",
    "DUSP1", "IER2", "KLF6", "NR4A1", "ATF3", "CEBPD", "SOCS3", "MYADM", "CRIP1", "TXNIP", "SELENOP",
    "A2M", "IFI27", "ISG15", "MX1", "IFI6", "OAS1", "STAT1", "GBP1", "PSMB9", "TAP1", "BST2",
)  # fmt: skip


@dataclass(frozen=True)
class Domain:
    """A tissue region: which cells it holds and how it looks in H&E."""

    name: str
    composition: dict[str, float]  # mean cell-type fractions
    cells_per_mm2: float
    eosin: float  # optical density of the eosin-stained background


DOMAINS: tuple[Domain, ...] = (
    Domain("invasive cancer", {"tumor": 0.70, "fibroblast": 0.10, "macrophage": 0.10, "T cell": 0.05,
                               "endothelial": 0.05}, 9000, 0.45),
    Domain("connective tissue", {"fibroblast": 0.60, "endothelial": 0.15, "macrophage": 0.10, "T cell": 0.10,
                                 "tumor": 0.05}, 3000, 0.95),
    Domain("immune infiltrate", {"T cell": 0.45, "B cell": 0.30, "macrophage": 0.15, "fibroblast": 0.10},
           12000, 0.30),
    Domain("adipose tissue", {"adipocyte": 0.70, "fibroblast": 0.15, "endothelial": 0.15}, 900, 0.10),
    Domain("cancer in situ", {"tumor": 0.55, "fibroblast": 0.20, "T cell": 0.15, "macrophage": 0.10}, 7000, 0.60),
    Domain("vascular stroma", {"endothelial": 0.45, "fibroblast": 0.35, "macrophage": 0.20}, 5000, 0.75),
)  # fmt: skip


@dataclass(frozen=True)
class Nucleus:
    """Nuclear morphology of a cell type."""

    radius_um: float
    darkness: float  # hematoxylin optical density


NUCLEI: dict[str, Nucleus] = {
    "tumor": Nucleus(5.5, 1.0),
    "fibroblast": Nucleus(2.5, 0.8),
    "T cell": Nucleus(3.0, 1.3),
    "B cell": Nucleus(3.0, 1.2),
    "macrophage": Nucleus(4.0, 0.6),
    "endothelial": Nucleus(2.5, 0.7),
    "adipocyte": Nucleus(2.5, 0.6),
}

CELL_TYPES: tuple[str, ...] = tuple(MARKERS)
