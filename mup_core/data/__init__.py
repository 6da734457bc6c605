from mup_core.data.chat import as_dialogue, render, render_all
from mup_core.data.dataset import LABELS, Dataset, DatasetError, concat, decode_input, encode_input
from mup_core.data.loaders import load_dataset, save_jsonl
from mup_core.data.splits import split_dataset

__all__ = [
    "LABELS",
    "Dataset",
    "DatasetError",
    "as_dialogue",
    "concat",
    "decode_input",
    "encode_input",
    "load_dataset",
    "render",
    "render_all",
    "save_jsonl",
    "split_dataset",
]
