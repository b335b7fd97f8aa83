"""Runs on disk: save, load and find them. Nothing is ever pickled.

    layout.py    the run folder: file names, finding runs, the lock, the metrics log
    tensors.py   safetensors files with our JSON metadata
    formats.py   format versions and the upgrades of older runs
    load.py      a trained model, its config and tokenizer, checked against each other


    checkpoints/<run>/
      run.json            format version, model / train / data configs, corpus figures
      tokenizer.json      (and tokenizer.model for sentencepiece levels)
      best.safetensors    weights of the best validation loss so far
      last.safetensors    weights + optimizer + loop state + RNG: exact resume
      metrics.jsonl       one JSON object per log line, appended
      .lock               held while a process trains the run
      .starting           a first start, until its first checkpoint (then removed)

Every file is written aside, flushed to disk and renamed into place, so a crash leaves either
the old file or the new one, never half of one. Each checkpoint is one safetensors file whose
JSON metadata says what it holds, so its tensors and its loop state always agree.
"""

from __future__ import annotations

from charrnn.checkpoint.formats import FORMAT_VERSION, read_run_json
from charrnn.checkpoint.layout import (
    BEST,
    DEFAULT_ROOT,
    LAST,
    LOCK,
    METRICS,
    RUN_JSON,
    STARTING,
    MetricsLog,
    check_not_in_run,
    check_run_name,
    find_run,
    is_incomplete_run,
    is_run,
    last_trained,
    list_runs,
    new_run_name,
    no_runs,
    reading_run,
    remove_stale_temps,
    run_lock,
)
from charrnn.checkpoint.load import (
    LoadedRun,
    check_shapes,
    check_tokenizer,
    load_run,
    load_weights,
)
from charrnn.checkpoint.tensors import META_KEY, load_tensors, read_meta, save_tensors

__all__ = [
    "BEST",
    "DEFAULT_ROOT",
    "FORMAT_VERSION",
    "LAST",
    "LOCK",
    "META_KEY",
    "METRICS",
    "RUN_JSON",
    "STARTING",
    "LoadedRun",
    "MetricsLog",
    "check_not_in_run",
    "check_run_name",
    "check_shapes",
    "check_tokenizer",
    "find_run",
    "is_incomplete_run",
    "is_run",
    "last_trained",
    "list_runs",
    "load_run",
    "load_tensors",
    "load_weights",
    "new_run_name",
    "no_runs",
    "read_meta",
    "read_run_json",
    "reading_run",
    "remove_stale_temps",
    "run_lock",
    "save_tensors",
]
