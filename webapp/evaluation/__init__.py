"""Measure a prompt bank on a clinic's own labelled images.

- ``metrics``: pure metric functions (balanced accuracy, sensitivity and
  specificity, AUROC, confusion matrix, calibration), checked by hand in tests.
- ``dataset``: read an image folder or a CSV of labelled images, and the
  mapping from dataset labels to bank conditions.
- ``runner``: run the app's own pipeline (localize, crop, classify) on every
  image, scoring one or two banks/template sets from one image embedding.
- ``thresholds``: fit per-condition alert thresholds on a validation split.
- ``report``: the JSON report and the self-contained HTML report with plots.

Nothing here writes a file except ``report.write_report``, into the folder
the user named (the overrides file is written by the ``eval`` command).
"""
