"""Defaults that the command line shows in its help, in a module that imports nothing.

``mammocad --help`` (and every ``mammocad <command> --help``) must start in well under a second:
the modules that use these values import numpy, pandas, scikit-learn or torch, so the values
live here and those modules import them from here (their old names still work).
"""

from __future__ import annotations

#: Larger than any full-field mammogram (CBIS-DDSM scans reach ~25 MP); guards against decompression bombs.
DEFAULT_MAX_PIXELS = 60_000_000
#: Memory one decode (with its preprocessing) may need, in MiB (see :mod:`mammocad.data.decode_budget`); the
#: API also admits decodes and heatmaps at once only while their estimates fit into it together. Every image
#: under the pixel limit fits, with its heatmap: a 60-megapixel 16-bit grey DICOM is estimated at ~690 MB to
#: decode (+ ~650 MB for a heatmap), a 16-bit RGB PNG at ~800 MB.
DEFAULT_DECODE_BUDGET_MB = 1536
#: Images held out by ``mammocad data split --blind``.
DEFAULT_BLIND_SIZE = 150
#: Source formats the synthetic generator writes (``mammocad synth --format``).
SYNTH_FORMATS = ("mias", "folders", "csv", "ddsm-tfrecord", "kaumds", "cbis-ddsm", "bcdr")
