"""The encoder–decoder (Sutskever, Vinyals & Le 2014; Cho et al. 2014): an encoder stack reads
the source, its final state starts a decoder stack that is trained by teacher forcing to emit
the target.

Legend: S source steps, T target steps, B batch, E_s, E_t source and target embedding sizes,
H_e, H_d encoder and decoder hidden units, L_e, L_d their layers, D the encoder's directions,
V_s, V source and target vocabularies, F feature size (the conditioned decoder), P state parts
(h; or h and c for LSTM).

Forward, in order (backward calls the backwards in exactly the reverse order)::

    x_src = source_embedding[source]                        S,B,E_s
    _, state_e = encoder(x_src, 0, source_lengths)          (L_e*D, B, H_e) per part
    state_d0 = bridge(state_e)                              (L_d, B, H_d) per part
    x_dec = target_embedding[[start; target[:-1]]]          T,B,E_t    teacher forcing
    y = decoder(x_dec, state_d0, target_lengths)            T,B,H_d
    logits = y Wᵀ + b                                       T,B,V
    loss = cross_entropy(logits, target, t < target_lengths)

The bridge, per state part ``p`` (h, and c for LSTM), is one of

- ``bridge=None``, direct: ``state_d0[l] = Σ_d state_e[l*D + d]``, the encoder's state of
  layer l handed to the decoder's layer l, a bidirectional encoder's two directions summed.
  Needs L_e = L_d and H_e = H_d.
- ``bridge="linear"`` or ``"tanh"``: an affine map of all the encoder's final states at once,
  ``state_d0 = act(W_p · flat(state_e) + b_p)`` with ``flat`` laying the (L_e*D, B, H_e) array
  out as (B, L_e*D*H_e), layer by layer and within a layer forward then backward direction
  (each layer's two directions concatenated), and the (B, L_d*H_d) result cut into the
  decoder's layers; ``act`` is the identity or tanh, applied to every part (c too). Any
  layers and sizes. The form of OpenNMT's bridge (which uses a ReLU).
- no encoder (``encoder=None``), the conditioned decoder of image captioning: ``state_d0 =
  act(W_p · features + b_p)`` from a (B, F) feature vector; the bridge is then required.

The backward of the encoder–decoder is the decoder's BPTT, whose gradient of the initial state
``dstate_d0`` is the gradient of the encoder's final state through the bridge's Jacobian,
``dstate_e = bridge_backward(dstate_d0)``, and then the encoder's BPTT from that ``dh_n`` (and
``dc_n``) with no gradient on its outputs (no attention reads them): :meth:`Seq2Seq.backward`.

The loss is the mean cross-entropy over the target tokens within their lengths
(``reduction="mean"``, torch's ``cross_entropy`` with the padding ignored), or their sum
(``reduction="sum"``, the negative log-likelihood of the batch's targets).

The parameters are one dict with the ``state_dict`` names of an equivalent torch module with
submodules ``source_embedding`` (``nn.Embedding``), ``encoder`` (``nn.RNN/LSTM/GRU``),
``bridge`` (an ``nn.ModuleDict`` of one ``nn.Linear`` per state part, ``h`` and ``c``),
``target_embedding``, ``decoder`` and ``head`` (``nn.Linear``).
"""

from typing import NamedTuple

import numpy as np

from .. import recurrence
from ..checks import as_float_array, check_lengths, check_shape, is_integer
from ..layers import GRU, LSTM, RNN, dropout_generator, dropout_masks, stack_backward, stack_forward
from .embedding import check_ids, embedding_backward, embedding_forward
from .head import head_backward, head_forward
from .losses import cross_entropy_backward, cross_entropy_forward
from .network import split_params
from .params import NetParameters

BRIDGES = (None, "linear", "tanh")
REDUCTIONS = ("mean", "sum")


# the bridge: pure functions


def flatten_state(state):
    """(L*D, B, H) as (B, L*D*H): for each sequence, layer by layer, directions within a layer."""
    return state.transpose(1, 0, 2).reshape(state.shape[1], -1)  # B,L*D*H


def unflatten_state(flat, num_layers, hidden_size):
    """(B, L*H) as (L, B, H), the inverse of :func:`flatten_state`."""
    return np.ascontiguousarray(flat.reshape(flat.shape[0], num_layers, hidden_size).transpose(1, 0, 2))  # L,B,H


def merge_directions(state, num_directions):
    """The direct bridge, ``merged[l] = Σ_d state[l*D + d]``: (L*D, B, H) -> (L, B, H)."""
    L_D, B, H = state.shape
    return state.reshape(L_D // num_directions, num_directions, B, H).sum(axis=1)  # L,B,H


def merge_directions_backward(dmerged, num_directions):
    """Backward of :func:`merge_directions`: each direction of layer l receives ``dmerged[l]``."""
    L, B, H = dmerged.shape
    return np.repeat(dmerged[:, None], num_directions, axis=1).reshape(L * num_directions, B, H)  # L*D,B,H


class BridgeCache(NamedTuple):
    """What :func:`bridge_forward` keeps."""

    affine: tuple  # per state part, the head.HeadCache of its affine map
    outputs: tuple  # per state part, (B, L_d*H_d) after the activation (tanh's derivative reads it)
    activation: str  # "linear" or "tanh"


def bridge_forward(params, inputs, part_names, activation, num_layers, hidden_size):
    """The learned bridge: per state part p, ``state_p = act(W_p x_p + b_p)``.

    Parameters
    ----------
    params : per state part p, ``{"p.weight": (L_d*H_d, N), "p.bias": (L_d*H_d,)}``
    inputs : tuple of (B, N) arrays, one per state part: the flattened encoder states
        (:func:`flatten_state`), or the same features for every part
    part_names : the parts, in the order of ``inputs``, e.g. ``("h", "c")``
    activation : ``"linear"`` (the identity) or ``"tanh"``
    num_layers, hidden_size : L_d, H_d

    Returns
    -------
    state : tuple of (L_d, B, H_d), one per part
    cache : BridgeCache
    """
    affine, outputs, state = [], [], []
    for part, flat in zip(part_names, inputs):
        pre, cache = head_forward({"weight": params[f"{part}.weight"], "bias": params[f"{part}.bias"]}, flat)
        out = np.tanh(pre) if activation == "tanh" else pre  # B,L_d*H_d
        affine.append(cache)
        outputs.append(out)
        state.append(unflatten_state(out, num_layers, hidden_size))
    return tuple(state), BridgeCache(tuple(affine), tuple(outputs), activation)


def bridge_backward(dstate, cache, part_names):
    """Backward of :func:`bridge_forward`: the bridge's Jacobian applied to the decoder's
    ``dstate_d0``. For ``out = tanh(pre)``, ``dpre = dout (1 - out²)``; for ``pre = W x + b``,
    ``dW = dpreᵀ x``, ``db = Σ_B dpre``, ``dx = dpre W``.

    Parameters
    ----------
    dstate : tuple of (L_d, B, H_d), one per part
    cache : BridgeCache
    part_names : the parts, e.g. ``("h", "c")``

    Returns
    -------
    grads : per part p, ``{"p.weight", "p.bias"}``
    dinputs : tuple of (B, N), one per part
    """
    grads, dinputs = {}, []
    for part, dpart, affine, out in zip(part_names, dstate, cache.affine, cache.outputs):
        dout = flatten_state(dpart)  # B,L_d*H_d
        # out = tanh(pre)
        dpre = dout * (1.0 - out * out) if cache.activation == "tanh" else dout
        # pre = x Wᵀ + b
        part_grads, dinput = head_backward(dpre, affine)
        grads[f"{part}.weight"], grads[f"{part}.bias"] = part_grads["weight"], part_grads["bias"]
        dinputs.append(dinput)
    return grads, tuple(dinputs)


# helpers of the public passes


def pad_sequences(sequences, pad_id=0):
    """Right-pad token sequences into a time-major batch.

    Parameters
    ----------
    sequences : B sequences of ints, each of length >= 1
    pad_id : the id written past each sequence's end

    Returns
    -------
    ids : (T, B) int64, T the longest length
    lengths : (B,) int64
    """
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)  # B
    if lengths.size == 0 or lengths.min() < 1:
        raise ValueError(f"expected at least one sequence, each of at least one token, but got lengths {lengths}")
    ids = np.full((int(lengths.max()), len(sequences)), pad_id, dtype=np.int64)  # T,B
    for b, sequence in enumerate(sequences):
        ids[:len(sequence), b] = sequence
    return ids, lengths


def shift_right(target, start_id):
    """Teacher forcing's decoder input, ``[start; target[:-1]]``: (T, B) -> (T, B)."""
    shifted = np.empty_like(target)  # T,B
    shifted[0] = start_id
    shifted[1:] = target[:-1]
    return shifted


def log_softmax(logits):
    """``z - logsumexp(z)`` over the last axis, the max subtracted first so that nothing overflows."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class Seq2SeqCache(NamedTuple):
    """What :meth:`Seq2Seq.forward` keeps for :meth:`Seq2Seq.backward`."""

    source_embedding: object  # EmbeddingCache, or None without an encoder
    encoder: object  # layers.StackCache, or None without an encoder
    encoder_output_shape: tuple | None  # S,B,D*H_e: the outputs that no loss reads
    bridge: object  # BridgeCache, or None for the direct bridge
    target_embedding: object  # EmbeddingCache
    decoder: object  # layers.StackCache
    head: object  # head.HeadCache
    loss: object  # losses.CrossEntropyCache


class Seq2Seq(NetParameters):
    """Encoder–decoder with teacher forcing, per-step head and masked cross-entropy, and
    hand-written backward through the decoder, the bridge and the encoder.

    Parameters
    ----------
    encoder : a ``bptt.RNN``, ``bptt.LSTM`` or ``bptt.GRU`` (any layers, either direction), or
        None for a decoder conditioned on a feature vector. Its configuration and a copy of its
        parameters are taken; ``input_size`` is the source embedding's size E_s.
    decoder : a unidirectional ``bptt.RNN/LSTM/GRU`` whose state has the encoder's parts (an
        LSTM with an LSTM; RNN and GRU with either); ``input_size`` is E_t.
    target_vocab_size : V, the target tokens (the decoder's input and output vocabulary)
    source_vocab_size : V_s, with an encoder
    features_size : F, without an encoder
    bridge : None (direct: same layers and hidden size, directions summed), ``"linear"`` or
        ``"tanh"`` (see the module's docstring); required without an encoder
    start_id : the token the decoder reads first (teacher forcing and decoding)
    end_id : the token that ends a target, the default stop of ``bptt.nets.decoding``; None
        for none (the target rows of a batch end with it: the data appends it, not the model)
    reduction : ``"mean"`` over the target tokens within their lengths, or their ``"sum"``
    seed : seeds the initialisation of the embeddings (N(0, 1), as torch), the bridge and the
        head (uniform in ±1/sqrt(fan_in), as ``nn.Linear``)
    """

    KIND = "model"  # how a check of its parameters names it

    def __init__(self, encoder, decoder, target_vocab_size, *, source_vocab_size=None, features_size=None,
                 bridge=None, start_id, end_id=None, reduction="mean", seed=None):
        layer_types = (RNN, LSTM, GRU)
        if encoder is not None and not isinstance(encoder, layer_types):
            raise TypeError(f"expected encoder to be a bptt.RNN, LSTM, GRU or None but got {type(encoder).__name__}")
        if not isinstance(decoder, layer_types):
            raise TypeError(f"expected decoder to be a bptt.RNN, LSTM or GRU but got {type(decoder).__name__}")
        if decoder.bidirectional:
            raise ValueError("expected a unidirectional decoder (it emits left to right) but got bidirectional=True")
        for layer in (encoder, decoder):
            if layer is not None and layer.batch_first:
                raise ValueError("expected time-major layers (batch_first=False): Seq2Seq takes (S, B) and (T, B) ids")
        if bridge not in BRIDGES:
            raise ValueError(f"expected bridge None, 'linear' or 'tanh' but got {bridge!r}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"expected reduction 'mean' or 'sum' but got {reduction!r}")
        if not is_integer(target_vocab_size, 1):
            raise ValueError(f"expected target_vocab_size to be a positive integer but got {target_vocab_size!r}")
        for name, token in (("start_id", start_id), ("end_id", end_id)):
            if not (token is None and name == "end_id") and not (is_integer(token, 0) and token < target_vocab_size):
                raise ValueError(f"expected {name} in [0, {target_vocab_size}) but got {token!r}")
        if encoder is None:
            if not is_integer(features_size, 1):
                raise ValueError(f"expected features_size, a positive integer, without an encoder but got "
                                 f"{features_size!r}")
            if source_vocab_size is not None:
                raise ValueError("source_vocab_size is for a model with an encoder; without one, give features_size")
            if bridge is None:
                raise ValueError("a decoder conditioned on features needs bridge='linear' or 'tanh'")
        else:
            if not is_integer(source_vocab_size, 1):
                raise ValueError(f"expected source_vocab_size, a positive integer, with an encoder but got "
                                 f"{source_vocab_size!r}")
            if features_size is not None:
                raise ValueError("features_size is for a decoder without an encoder (encoder=None)")
            if encoder.cell.STATE_NAMES != decoder.cell.STATE_NAMES:
                raise ValueError(f"expected encoder and decoder states of the same parts but got "
                                 f"{encoder.cell.STATE_NAMES} and {decoder.cell.STATE_NAMES}")
            if encoder.dtype != decoder.dtype:
                raise TypeError(f"expected encoder and decoder of one dtype but got {encoder.dtype} and "
                                f"{decoder.dtype}")
            same_shape = (encoder.num_layers, encoder.hidden_size) == (decoder.num_layers, decoder.hidden_size)
            if bridge is None and not same_shape:
                raise ValueError(
                    f"the direct bridge (bridge=None) needs the decoder's layers and hidden size to be the encoder's, "
                    f"({encoder.num_layers}, {encoder.hidden_size}), but got ({decoder.num_layers}, "
                    f"{decoder.hidden_size}); give bridge='linear' or 'tanh'"
                )
        self.encoder = None if encoder is None else _config(encoder)
        self.decoder = _config(decoder)
        self.cell = decoder.cell
        self.dtype = decoder.dtype
        self.target_vocab_size = int(target_vocab_size)
        self.source_vocab_size = None if source_vocab_size is None else int(source_vocab_size)
        self.features_size = None if features_size is None else int(features_size)
        self.bridge = bridge
        self.start_id = int(start_id)
        self.end_id = None if end_id is None else int(end_id)
        self.reduction = reduction
        rng = np.random.default_rng(seed)
        dtype = self.dtype
        params = {}
        if encoder is not None:
            embedding_shape = (self.source_vocab_size, encoder.input_size)  # V_s,E_s
            params["source_embedding.weight"] = rng.standard_normal(embedding_shape).astype(dtype)
            params.update({f"encoder.{name}": value.copy() for name, value in encoder.params.items()})
        if bridge is not None:
            width_in = self.features_size if encoder is None else (
                encoder.num_layers * encoder.num_directions * encoder.hidden_size)
            width_out = decoder.num_layers * decoder.hidden_size
            bound = 1.0 / np.sqrt(width_in)
            for part in self.cell.STATE_NAMES:
                params[f"bridge.{part}.weight"] = rng.uniform(-bound, bound, (width_out, width_in)).astype(dtype)
                params[f"bridge.{part}.bias"] = rng.uniform(-bound, bound, (width_out,)).astype(dtype)
        embedding_shape = (self.target_vocab_size, decoder.input_size)  # V,E_t
        params["target_embedding.weight"] = rng.standard_normal(embedding_shape).astype(dtype)
        params.update({f"decoder.{name}": value.copy() for name, value in decoder.params.items()})
        bound = 1.0 / np.sqrt(decoder.hidden_size)
        params["head.weight"] = rng.uniform(-bound, bound, (self.target_vocab_size, decoder.hidden_size)).astype(dtype)
        params["head.bias"] = rng.uniform(-bound, bound, (self.target_vocab_size,)).astype(dtype)
        self.params = params

    def _torch_repr(self):
        encoder = "None" if self.encoder is None else self.encoder.describe()
        source = (f"source_vocab_size={self.source_vocab_size}" if self.encoder is not None
                  else f"features_size={self.features_size}")
        return (f"Seq2Seq({encoder}, {self.decoder.describe()}, {self.target_vocab_size}, {source}, "
                f"bridge={self.bridge!r}, start_id={self.start_id}, end_id={self.end_id}, "
                f"reduction={self.reduction!r}, dtype={self.dtype.name})")

    # input checks: everything public is checked here, before any arithmetic

    def check_dropout_rng(self, dropout_rng):
        """The generator of a training pass's dropout masks, or None for none: the rule of
        ``layers.dropout_generator`` (a generator, or ``False`` for none; None is refused where
        a stack drops out between layers)."""
        stacks = [stack for stack in (self.encoder, self.decoder) if stack is not None and stack.dropout]
        owner = f"the {' and the '.join(stack.describe() for stack in stacks)} of this Seq2Seq" if stacks else "Seq2Seq"
        return dropout_generator(max((stack.dropout for stack in stacks), default=0.0), dropout_rng, True, owner)

    def check_source(self, source, source_lengths):
        """The source as (S, B) int64 ids (0 past each length) and its lengths, or the features
        as (B, F) floats; returns ``(source, lengths, B)``."""
        if self.encoder is None:
            if source_lengths is not None:
                raise ValueError("source_lengths are for token sources; a conditioned decoder reads (B, F) features")
            features = as_float_array(source, "features", self.dtype)
            check_shape(features, "features", (None, self.features_size), ("B", "F"))
            if features.shape[0] == 0:
                raise ValueError("expected features of at least one sequence but got shape (0, F)")
            return features, None, features.shape[0]
        source, lengths = _check_tokens(source, source_lengths, self.source_vocab_size, "source")
        return source, lengths, source.shape[1]

    def check_target(self, target, target_lengths, batch):
        """The target as (T, B) int64 ids (0 past each length), its lengths ((B,), None for all
        T) and the (T, B) bool mask of the positions that carry a loss."""
        target, lengths = _check_tokens(target, target_lengths, self.target_vocab_size, "target")
        if target.shape[1] != batch:
            raise ValueError(f"expected target of shape (T, {batch}), the source's batch, but got {target.shape}")
        T = target.shape[0]
        mask = np.ones(target.shape, bool) if lengths is None else recurrence.length_mask(lengths, T)[:, :, 0]
        return target, lengths, mask

    # the pass, time-major, on checked inputs

    def _initial_state(self, params, source, source_lengths, keep_cache, dropout_rng=None):
        """Source embedding, encoder and bridge: the decoder's initial state, a tuple of
        (L_d, B, H_d), and the caches ``(source_embedding, encoder, encoder_output_shape, bridge)``
        (None entries without ``keep_cache``)."""
        source_cache = encoder_cache = bridge_cache = output_shape = None
        if self.encoder is None:
            inputs = (source,) * len(self.cell.STATE_NAMES)  # B,F for every part
        else:
            x, source_cache = embedding_forward(split_params(params, "source_embedding"), source)  # S,B,E_s
            masks = self.encoder.masks(dropout_rng, x.shape[:2])
            y, state_e, encoder_cache = stack_forward(
                self.encoder.cell, split_params(params, "encoder"), x, self.encoder.zero_state(x.shape[1]),
                source_lengths, self.encoder.num_layers, self.encoder.num_directions, masks, keep_cache,
            )
            output_shape = y.shape  # S,B,D*H_e
            if self.bridge is None:
                state_d0 = tuple(merge_directions(s, self.encoder.num_directions) for s in state_e)  # L_d,B,H_d
                return state_d0, (source_cache, encoder_cache, output_shape, None)
            inputs = tuple(flatten_state(s) for s in state_e)  # B,L_e*D*H_e per part
        state_d0, bridge_cache = bridge_forward(split_params(params, "bridge"), inputs, self.cell.STATE_NAMES,
                                                self.bridge, self.decoder.num_layers, self.decoder.hidden_size)
        return state_d0, (source_cache, encoder_cache, output_shape, bridge_cache if keep_cache else None)

    def _logits(self, params, decoder_input, state_d0, target_lengths, keep_cache, dropout_rng=None):
        """Target embedding, decoder and head over (T, B) input ids: logits (T, B, V), the
        decoder's final state and the caches ``(target_embedding, decoder, head)``."""
        x, embedding_cache = embedding_forward(split_params(params, "target_embedding"), decoder_input)  # T,B,E_t
        masks = self.decoder.masks(dropout_rng, x.shape[:2])
        y, state_n, decoder_cache = stack_forward(
            self.decoder.cell, split_params(params, "decoder"), x, state_d0, target_lengths,
            self.decoder.num_layers, 1, masks, keep_cache,
        )  # y: T,B,H_d
        logits, head_cache = head_forward(split_params(params, "head"), y)  # T,B,V
        return logits, state_n, (embedding_cache, decoder_cache, head_cache)

    # public passes

    def forward(self, source, source_lengths, target, target_lengths, *, params=None, dropout_rng=None):
        """The loss of a batch, by teacher forcing.

        Parameters
        ----------
        source : (S, B) token ids in [0, V_s) (read only within ``source_lengths``); without an
            encoder, (B, F) features
        source_lengths : B ints in [1, S] for a right-padded source (the encoder's packed
            sequences), or None for all S; None without an encoder
        target : (T, B) token ids in [0, V), each row ending with ``end_id`` where the model is
            to learn to stop; read only within ``target_lengths``
        target_lengths : B ints in [1, T], or None for all T; the positions past a target's
            length carry no loss
        params : None for ``self.params``, or a dict of the same names and shapes
        dropout_rng : np.random.Generator for the dropout masks between layers of the encoder
            and the decoder (those built with ``dropout > 0``: training), or False for no
            dropout (evaluation); None only where neither stack has dropout

        Returns
        -------
        loss : float, the mean (or sum, ``reduction``) cross-entropy over the target tokens
        cache : Seq2SeqCache, for :meth:`backward`
        """
        params = self.check_params(params)
        dropout_rng = self.check_dropout_rng(dropout_rng)
        source, source_lengths, B = self.check_source(source, source_lengths)
        target, target_lengths, mask = self.check_target(target, target_lengths, B)
        state_d0, (source_cache, encoder_cache, output_shape, bridge_cache) = self._initial_state(
            params, source.copy(), source_lengths, True, dropout_rng)
        logits, _, (target_cache, decoder_cache, head_cache) = self._logits(
            params, shift_right(target, self.start_id), state_d0, target_lengths, True, dropout_rng)
        loss, loss_cache = cross_entropy_forward(logits, target.copy(), mask)
        if self.reduction == "sum":
            loss *= loss_cache.count
        cache = Seq2SeqCache(source_cache, encoder_cache, output_shape, bridge_cache, target_cache, decoder_cache,
                             head_cache, loss_cache)
        return loss, cache

    def backward(self, cache):
        """Gradients of the loss of :meth:`forward`: the decoder's BPTT, its ``dstate_d0``
        through the bridge into the encoder's final state, the encoder's BPTT.

        Parameters
        ----------
        cache : the Seq2SeqCache of :meth:`forward`

        Returns
        -------
        grads : dict, the keys and shapes of ``params``
        dsource : (S, B, E_s), the gradient of the embedded source (the encoder's input), zero
            past each length; without an encoder (B, F), the gradient of the features
        """
        if not isinstance(cache, Seq2SeqCache):
            raise TypeError(f"expected the cache returned by forward but got {type(cache).__name__}")
        grads = {}
        parts = self.cell.STATE_NAMES
        # loss = cross_entropy(logits, target, mask), its mean or its sum (gradient count)
        dlogits = cross_entropy_backward(1.0 if self.reduction == "mean" else float(cache.loss.count), cache.loss)
        # logits = y Wᵀ + b
        head_grads, dy = head_backward(dlogits, cache.head)  # T,B,H_d
        # y = decoder(x_dec, state_d0): BPTT; the decoder's final state carries no loss
        decoder_grads, dx_dec, dstate_d0 = stack_backward(dy, (None,) * len(parts), cache.decoder)
        # x_dec = target_embedding[[start; target[:-1]]]
        target_grads = embedding_backward(dx_dec, cache.target_embedding)
        # state_d0 = bridge(state_e): the bridge's Jacobian takes dstate_d0 to dstate_e (dh_n, dc_n)
        if cache.bridge is not None:
            bridge_grads, dinputs = bridge_backward(dstate_d0, cache.bridge, parts)
            grads.update({f"bridge.{name}": g for name, g in bridge_grads.items()})
        if self.encoder is None:
            dsource = sum(dinputs[1:], dinputs[0])  # B,F  the features feed every part
        else:
            D, H_e = self.encoder.num_directions, self.encoder.hidden_size
            if cache.bridge is None:
                dstate_e = tuple(merge_directions_backward(d, D) for d in dstate_d0)  # L_e*D,B,H_e
            else:
                dstate_e = tuple(unflatten_state(d, self.encoder.num_layers * D, H_e) for d in dinputs)
            # _, state_e = encoder(x_src): BPTT from dh_n (and dc_n); no loss reads its outputs
            dy_e = np.zeros(cache.encoder_output_shape, self.dtype)  # S,B,D*H_e
            encoder_grads, dsource, _ = stack_backward(dy_e, dstate_e, cache.encoder)  # dsource: S,B,E_s
            # x_src = source_embedding[source]
            grads["source_embedding.weight"] = embedding_backward(dsource, cache.source_embedding)["weight"]
            grads.update({f"encoder.{name}": g for name, g in encoder_grads.items()})
        grads["target_embedding.weight"] = target_grads["weight"]
        grads.update({f"decoder.{name}": g for name, g in decoder_grads.items()})
        grads["head.weight"], grads["head.bias"] = head_grads["weight"], head_grads["bias"]
        grads = {name: grads[name] for name in self.params}  # the order of params
        return grads, dsource

    def loss_and_grads(self, source, source_lengths, target, target_lengths, *, params=None, dropout_rng=None):
        """The loss of a batch and the gradient of every parameter.

        Arguments as :meth:`forward`. Returns ``loss`` (float) and ``grads`` (dict, the keys and
        shapes of ``params``).
        """
        loss, cache = self.forward(source, source_lengths, target, target_lengths, params=params,
                                   dropout_rng=dropout_rng)
        grads, _ = self.backward(cache)
        return loss, grads

    # inference: cache-free passes

    def initial_state(self, source, source_lengths=None, *, params=None):
        """The decoder's initial state for a batch of sources: encoder (cache-free) and bridge.

        Parameters
        ----------
        source, source_lengths : as :meth:`forward`
        params : None for ``self.params``, or a dict of the same names and shapes

        Returns
        -------
        state : tuple of (L_d, B, H_d) arrays, one per state part (h; h and c for LSTM)
        """
        params = self.check_params(params)
        source, source_lengths, _ = self.check_source(source, source_lengths)
        return self._initial_state(params, source, source_lengths, False)[0]

    def decode_step(self, tokens, state, *, params=None):
        """One step of the decoder, cache-free: the next token's log-probabilities.

        Parameters
        ----------
        tokens : (N,) int ids in [0, V), the token each row reads (``start_id`` first)
        state : tuple of (L_d, N, H_d) arrays, one per state part (:meth:`initial_state`)
        params : None for ``self.params``, or a dict of the same names and shapes

        Returns
        -------
        log_probs : (N, V), log softmax of the head's logits
        state : tuple of (L_d, N, H_d), the state after the step
        """
        params = self.check_params(params)
        tokens = check_ids(tokens, "tokens", self.target_vocab_size, (None,))
        parts = self.cell.STATE_NAMES
        if not isinstance(state, tuple) or len(state) != len(parts):
            raise ValueError(f"expected state as a tuple of {len(parts)} array(s) ({', '.join(parts)}) but got "
                             f"{type(state).__name__}")
        shape = (self.decoder.num_layers, len(tokens), self.decoder.hidden_size)
        state = tuple(as_float_array(s, f"state {part}", self.dtype) for s, part in zip(state, parts))
        for s, part in zip(state, parts):
            check_shape(s, f"state {part}", shape, ("L_d", "N", "H_d"))
        logits, state_n, _ = self._logits(params, tokens[None], state, None, False)  # 1,N,V
        return log_softmax(logits[0]), state_n

    def sequence_log_probs(self, source, source_lengths, target, target_lengths, *, params=None):
        """The log-probability under the model of each target, ``Σ_{t < n_b} log p(target[t, b] |
        target[:t, b], source_b)``, by a cache-free teacher-forced pass.

        Arguments as :meth:`forward`. Returns (B,): the sum over each target's tokens; with
        ``reduction="sum"`` the negative of its total is the loss.
        """
        params = self.check_params(params)
        source, source_lengths, B = self.check_source(source, source_lengths)
        target, target_lengths, mask = self.check_target(target, target_lengths, B)
        state_d0 = self._initial_state(params, source, source_lengths, False)[0]
        logits, _, _ = self._logits(params, shift_right(target, self.start_id), state_d0, target_lengths, False)
        picked = np.take_along_axis(log_softmax(logits), target[..., None], axis=-1)[..., 0]  # T,B
        return np.where(mask, picked, 0.0).sum(axis=0)  # B


class _Stack(NamedTuple):
    """The configuration of a recurrent stack that Seq2Seq keeps (not the instance)."""

    kind: str  # RNN, LSTM or GRU
    nonlinearity: str | None  # RNN's
    cell: object
    input_size: int
    hidden_size: int
    num_layers: int
    num_directions: int
    dropout: float
    dtype: np.dtype

    def describe(self):
        extra = f", nonlinearity={self.nonlinearity!r}" if self.nonlinearity not in (None, "tanh") else ""
        extra += ", bidirectional=True" if self.num_directions == 2 else ""
        extra += f", dropout={self.dropout:g}" if self.dropout else ""
        return f"{self.kind}({self.input_size}, {self.hidden_size}, num_layers={self.num_layers}{extra})"

    def zero_state(self, batch):
        """A tuple of (L*D, B, H) zeros, one per state part."""
        shape = (self.num_layers * self.num_directions, batch, self.hidden_size)
        return tuple(np.zeros(shape, self.dtype) for _ in self.cell.STATE_NAMES)

    def masks(self, rng, steps_batch):
        """Dropout masks between this stack's layers for (T, B) steps, or None."""
        if not self.dropout or rng is None:
            return None
        shape = steps_batch + (self.num_directions * self.hidden_size,)
        return dropout_masks(rng, self.dropout, shape, self.num_layers, self.dtype)


def _config(rnn):
    return _Stack(type(rnn).__name__, getattr(rnn, "nonlinearity", None), rnn.cell, rnn.input_size, rnn.hidden_size,
                  rnn.num_layers, rnn.num_directions, rnn.dropout, rnn.dtype)


def _check_tokens(ids, lengths, size, name):
    """Time-major token ids (T, B) as int64, checked within ``lengths`` (B ints in [1, T], or
    None for all) and set to 0 past them; returns ``(ids, lengths)``."""
    array = np.asarray(ids)
    if array.ndim != 2 or 0 in array.shape:
        raise ValueError(f"expected {name} of shape ({'S' if name == 'source' else 'T'}, B), time-major token ids, "
                         f"with at least one step and one sequence, but got {array.shape}")
    if array.dtype.kind not in "iu":
        raise TypeError(f"expected {name} of integer token ids but got dtype {array.dtype}")
    T, B = array.shape
    if lengths is not None:
        lengths = check_lengths(lengths, B, T)
    within = None if lengths is None else recurrence.length_mask(lengths, T)[:, :, 0]  # T,B
    bad = (array < 0) | (array >= size)
    if within is not None:
        bad &= within
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"expected every token id of {name} in [0, {size}) within its length but got "
                         f"{array[where]} at {where} ({int(bad.sum())} out of range)")
    array = array.astype(np.int64, copy=False)
    return (array if within is None else np.where(within, array, 0)), lengths
