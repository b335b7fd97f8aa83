"""Corpora encoded on disk, their splits, and the batches training reads.

encode.py    a text file -> token and unit files, streamed in bounded memory
dataset.py   the dataset folder, its cache, train/validation splits
batches.py   B parallel streams read in windows of T tokens, with the stop heads' targets
"""

from __future__ import annotations

from charrnn.data.batches import (
    Batch,
    LengthPlan,
    StreamBatches,
    reading_streams,
    reveal_points,
    share,
    windows_to_read,
)
from charrnn.data.dataset import (
    DATASET_JSON,
    Dataset,
    build_dataset,
    cache_root,
    describe,
    is_dataset,
    open_source,
    prepare,
    resolve_data,
)
from charrnn.data.split import Pieces, Split, Text, split

__all__ = [
    "DATASET_JSON",
    "Batch",
    "Dataset",
    "LengthPlan",
    "Pieces",
    "Split",
    "StreamBatches",
    "Text",
    "build_dataset",
    "cache_root",
    "describe",
    "is_dataset",
    "open_source",
    "prepare",
    "reading_streams",
    "resolve_data",
    "reveal_points",
    "share",
    "split",
    "windows_to_read",
]
