"""Networks: embeddings, per-step heads and losses, the many-to-many (or many-to-one) network
with ``loss_and_grads``, and truncated BPTT over long streams."""

from .embedding import embedding_backward, embedding_forward, one_hot
from .head import head_backward, head_forward
from .losses import cross_entropy_backward, cross_entropy_forward, mse_backward, mse_forward
from .network import Network
from .seq2seq import Seq2Seq, pad_sequences
from .decoding import Decoded, beam_search, greedy_decode, length_penalty
from .tbptt import Update, Window, tbptt, windows

__all__ = [
    "Decoded",
    "Network",
    "Seq2Seq",
    "Update",
    "Window",
    "beam_search",
    "cross_entropy_backward",
    "cross_entropy_forward",
    "embedding_backward",
    "embedding_forward",
    "greedy_decode",
    "head_backward",
    "head_forward",
    "length_penalty",
    "mse_backward",
    "mse_forward",
    "one_hot",
    "pad_sequences",
    "tbptt",
    "windows",
]
