"""bptt: recurrent networks with hand-written, proven backpropagation through time."""

from .layers import GRU, LSTM, RNN
from .nets import Network
from .proofs import gradcheck

__version__ = "0.1.0"

__all__ = ["GRU", "LSTM", "Network", "RNN", "__version__", "gradcheck"]
