"""AIM-500 x backgrounds -> composites, on Dask.

Public API: ``make_sample_data`` (a synthetic AIM-500-style data set to try everything on), and
the pieces it draws with, ``synthetic_photo`` and ``synthetic_matte`` (what the benchmarks
time the pipeline and the metrics on).
"""

from pipeline.sample_data import (
    SampleDataSummary,
    make_sample_data,
    synthetic_matte,
    synthetic_photo,
)

__all__ = ["SampleDataSummary", "make_sample_data", "synthetic_matte", "synthetic_photo"]
