"""A float64 torch mirror of ``bptt.nets.Network`` for the parity tests of the Networks wing:
a module with submodules ``embedding``, ``rnn`` and ``head``, loaded from the network's own
parameter dict (strict, so the names are proven to be torch's), and the losses written the
way a torch user writes them. Not a test file; imported by the tests of networks, TBPTT and
training."""

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from bptt.layers import make_rnn
from bptt.nets import Network

TORCH_RNNS = {"rnn": torch.nn.RNN, "rnn_relu": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


def make_network(kind, input_size, hidden_size, output_size, num_layers=1, *, bidirectional=False,
                 dtype=np.float64, seed=0, **options):
    """A Network over a fresh bptt RNN of ``kind``; every bias non-zero and different."""
    rnn = make_rnn(kind, input_size, hidden_size, num_layers, bidirectional=bidirectional, dtype=dtype, seed=seed)
    return Network(rnn, output_size, seed=seed + 1, **options)


class Mirror(torch.nn.Module):
    def __init__(self, kind, net):
        super().__init__()
        if net.input == "embedding":
            self.embedding = torch.nn.Embedding(net.vocab_size, net.input_size)
        extra = {"nonlinearity": "relu"} if kind == "rnn_relu" else {}
        self.rnn = TORCH_RNNS[kind](net.input_size, net.hidden_size, net.num_layers,
                                    bidirectional=net.bidirectional, **extra)
        self.head = torch.nn.Linear(net.num_directions * net.hidden_size, net.output_size)
        self.load_state_dict({k: torch.tensor(v) for k, v in net.params.items()})  # strict
        self.net = net

    def inputs(self, x):
        """x (T, B) ids or (T, B, I) floats as the stack's input (T, B, I)."""
        if self.net.input == "embedding":
            return self.embedding(torch.as_tensor(x))
        if self.net.input == "one_hot":
            return F.one_hot(torch.as_tensor(x), self.net.input_size).double()
        return torch.as_tensor(x)

    def outputs(self, inp, state=None, lengths=None):
        """The stack's output (T, B, D*H) and final state, packed where lengths are given."""
        T = inp.shape[0]
        if lengths is None:
            return self.rnn(inp, state)
        packed = pack_padded_sequence(inp, torch.as_tensor(lengths), enforce_sorted=False)
        out, state_n = self.rnn(packed, state)
        return pad_packed_sequence(out, total_length=T)[0], state_n

    def window(self, inp, entering, split):
        """The stack over one TBPTT window (T, B, I) from the state ``entering``, run in two
        pieces cut at step ``split`` when 0 < split < T, so that the state where the next window
        starts comes out too. Returns (out, the state after ``split`` steps, the final state)."""
        T = inp.shape[0]
        if 0 < split < T:
            out_a, middle = self.rnn(inp[:split], entering)
            out_b, last = self.rnn(inp[split:], middle)
            return torch.cat([out_a, out_b]), middle, last
        out, last = self.rnn(inp, entering)
        return out, (last if split == T else entering), last

    def loss(self, head_out, targets, mask=None):
        """The loss the way a torch user writes it: the mean over the selected positions."""
        targets = torch.as_tensor(targets)
        if mask is not None:
            mask = torch.as_tensor(mask)
            head_out, targets = head_out[mask], targets[mask]
        if self.net.loss == "cross_entropy":
            return F.cross_entropy(head_out.reshape(-1, head_out.shape[-1]), targets.reshape(-1))
        return F.mse_loss(head_out, targets)

    def forward(self, x, targets, state=None, lengths=None, mask=None):
        """Loss and final state of a time-major batch, as Network.forward."""
        out, state_n = self.outputs(self.inputs(x), to_torch_state(state), lengths)
        T, B = out.shape[:2]
        if self.net.mode == "many_to_one":
            last = np.full(B, T - 1) if lengths is None else np.asarray(lengths) - 1
            return self.loss(self.head(out[last, np.arange(B)]), targets), state_n
        if lengths is not None:
            within = np.arange(T)[:, None] < np.asarray(lengths)[None, :]
            mask = within if mask is None else (np.asarray(mask) & within)
        return self.loss(self.head(out), targets, mask), state_n


def detach(state):
    """A torch state, (L, B, H) or LSTM's pair, cut from the graph."""
    return tuple(s.detach() for s in state) if isinstance(state, tuple) else state.detach()


def to_torch_state(state):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(torch.as_tensor(s) for s in state)
    return torch.as_tensor(state)


def to_numpy_state(state):
    if isinstance(state, tuple):
        return tuple(s.detach().numpy() for s in state)
    return state.detach().numpy()


def torch_grads(mirror, loss):
    """dict name -> ndarray of d loss / d every parameter (zeros where none flows)."""
    names, tensors = zip(*mirror.named_parameters())
    grads = torch.autograd.grad(loss, tensors, allow_unused=True)
    return {n: (np.zeros(tuple(t.shape)) if g is None else g.numpy()) for n, t, g in zip(names, tensors, grads)}


def max_rel_err(ours, theirs):
    """max |ours - theirs| relative to max |theirs| (1 where theirs is all zero)."""
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    scale = np.abs(theirs).max(initial=0.0)
    return float(np.abs(ours - theirs).max(initial=0.0) / (scale if scale > 0 else 1.0))


def assert_same(ours, theirs, name, rtol=1e-10):
    """Equal to ``rtol`` relative to the tensor's largest entry; tuples entry by entry."""
    if isinstance(theirs, tuple):
        assert isinstance(ours, tuple) and len(ours) == len(theirs), name
        for k, (a, b) in enumerate(zip(ours, theirs)):
            assert_same(a, b, f"{name}[{k}]", rtol)
        return
    err = max_rel_err(ours, theirs)
    assert err <= rtol, f"{name}: relative error {err:.3e} > {rtol:g}"


def assert_same_grads(ours, theirs, rtol=1e-10):
    assert list(ours) == list(theirs), (list(ours), list(theirs))
    for name in theirs:
        assert_same(ours[name], theirs[name], name, rtol)
