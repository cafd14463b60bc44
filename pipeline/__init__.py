"""AIM-500 x backgrounds -> composites, on Dask.

Public API: ``make_sample_data`` (a synthetic AIM-500-style data set to try everything on).
"""

from pipeline.sample_data import SampleDataSummary, make_sample_data

__all__ = ["SampleDataSummary", "make_sample_data"]
