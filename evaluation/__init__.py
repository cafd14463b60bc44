"""Matting metrics, inference, scoring and export (metrics need no torch).

Public API:

- ``sad``, ``mse``, ``grad``, ``conn``, ``all_metrics`` (``evaluation.metrics``): the benchmark's
  four metrics on (H, W) 8-bit mattes and a 0/128/255 trimap, exactly as docs/reference.md section 4
  (the MATLAB evaluation code) defines them; ``to_uint8`` converts float predictions as the
  protocol saves them.
- ``score_folder`` (``evaluation.score``): a folder of predictions against ground truth and
  trimaps, matched by file name -> per-image scores and their means (``ScoreResult``), written
  to ``per_image.csv`` and ``summary.json``; ``indexnet evaluate score`` on the command line.

The model-running modules import torch, so they are not imported here (the metrics and the
scorer stay usable without it); import them directly:

- ``evaluation.run``: ``evaluate(EvalOptions(...))`` scores a checkpoint on validation shards
  (``indexnet evaluate run``); ``evaluation.contact_sheet.write_contact_sheet`` draws samples.
- ``evaluation.predict``: ``predict_file``, ``predict_folder`` (``evaluation.images``:
  ``read_image``, ``read_trimap``)
  (``indexnet predict``).
- ``evaluation.serve``: ``make_app(model)`` -> the Starlette app of ``indexnet serve`` (the
  ``serve`` extra).
- ``evaluation.export``: ``export_model(model, "onnx" | "torchscript", path)`` ->
  ``ExportReport`` (``indexnet export``).
"""

from evaluation.metrics import METRICS, all_metrics, conn, grad, mse, sad, to_uint8
from evaluation.score import ImageScore, ScoreError, ScoreResult, score_folder

__all__ = [
    "METRICS",
    "ImageScore",
    "ScoreError",
    "ScoreResult",
    "all_metrics",
    "conn",
    "grad",
    "mse",
    "sad",
    "score_folder",
    "to_uint8",
]
