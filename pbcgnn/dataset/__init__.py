"""Labelled frames as periodic PyG graphs: in memory (:class:`FrameDataset`) or streamed from an
on-disk store (:class:`StreamedFrameDataset`); splits, bootstrap resamples and the choice between
the two (:func:`load_datasets`)."""
from .frames import GRAPH_VERSION, FrameDataset, check_frames
from .loading import load_datasets, open_frames
from .splits import bootstrap_indices, file_sha256, split_indices
from .streamed import StreamedFrameDataset

__all__ = [
    "FrameDataset", "StreamedFrameDataset", "split_indices", "bootstrap_indices", "load_datasets", "open_frames",
    "check_frames", "GRAPH_VERSION", "file_sha256",
]
