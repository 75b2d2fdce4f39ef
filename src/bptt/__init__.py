"""bptt: recurrent networks with hand-written, proven backpropagation through time."""

from . import interop
from .layers import GRU, LSTM, RNN
from .nets import Network
from .proofs import check, diagnose, gradcheck
from .recurrence import Window

__version__ = "0.1.0"

__all__ = ["GRU", "LSTM", "Network", "RNN", "Window", "__version__", "check", "diagnose", "gradcheck", "interop"]
