"""lmforge: one toolkit for the whole life of a small or mid-sized language model.

Importing the package is cheap on purpose (the CLI's `--help` must stay fast): heavy libraries
(torch, transformers, datasets) are imported inside the functions that need them.
"""

__version__ = "0.1.0"
