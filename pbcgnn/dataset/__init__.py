"""Labelled frames as periodic PyG graphs: in memory (:class:`FrameDataset`) or streamed from an
on-disk store (:class:`StreamedFrameDataset`), or one at a time (:func:`iter_graphs`); splits,
bootstrap resamples, the choice between the first two (:func:`load_datasets`), their loader
(:class:`FrameLoader`, whose workers send each batch as one buffer), and the summary
``pbcgnn inspect`` prints (:func:`summarize_frames`)."""
from .frames import GRAPH_VERSION, FrameDataset, check_frames, checked_frames, iter_graphs
from .loader import FrameLoader
from .loading import load_datasets, open_frames
from .splits import bootstrap_indices, file_sha256, split_indices
from .streamed import StreamedFrameDataset
from .summary import FrameSummary, summarize_frames

__all__ = [
    "FrameDataset", "StreamedFrameDataset", "split_indices", "bootstrap_indices", "load_datasets", "open_frames",
    "check_frames", "checked_frames", "iter_graphs", "GRAPH_VERSION", "file_sha256",
    "FrameSummary", "summarize_frames", "FrameLoader",
]
