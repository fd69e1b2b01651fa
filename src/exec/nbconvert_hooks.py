# Loaded by `jupyter nbconvert --config`: appends a "start" event before each cell and a
# "done" event with the executed cell after it, to the file named by RUNTIME_MATRIX_PROGRESS.
# The harness reads them to name the cell that was running when a notebook was stopped, and
# to keep the outputs of a notebook that failed part-way.
import json
import os
import time

_PROGRESS = os.environ["RUNTIME_MATRIX_PROGRESS"]


def _emit(event):
    with open(_PROGRESS, "a", encoding="utf-8") as progress:
        progress.write(json.dumps(event) + "\n")


def _on_cell_execute(cell, cell_index, **_):
    _emit({"event": "start", "index": cell_index, "time": time.time()})


def _on_cell_executed(cell, cell_index, **_):
    _emit({"event": "done", "index": cell_index, "time": time.time(), "cell": cell})


c = get_config()  # noqa: F821 (provided by traitlets when it loads this file)
c.ExecutePreprocessor.on_cell_execute = _on_cell_execute
c.ExecutePreprocessor.on_cell_executed = _on_cell_executed
