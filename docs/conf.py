project = "omiclip"
author = "omiclip developers"
extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx_autodoc_typehints",
]
autosummary_generate = True
napoleon_numpy_docstring = True
napoleon_google_docstring = False
nb_execution_mode = "off"  # notebooks are executed by docs/notebooks/_make.py, outputs committed
nb_merge_streams = True  # one block per cell for the step-by-step log lines
html_theme = "sphinx_book_theme"
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence"]
