"""A float64 torch mirror of ``bptt.nets.Seq2Seq`` for the parity tests of the encoder–decoder,
written the way a torch user writes one: ``nn.Embedding``s, ``nn.RNN/LSTM/GRU`` (the encoder
over packed sequences, the decoder over the padded target with the padding ignored by the
loss instead), an ``nn.ModuleDict`` of ``nn.Linear`` bridges and an ``nn.Linear`` head. It is
loaded from the model's own parameter dict, strictly, so the names are proven to be torch's.
Not a test file."""

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pack_padded_sequence

TORCH_RNNS = {"RNN": torch.nn.RNN, "LSTM": torch.nn.LSTM, "GRU": torch.nn.GRU}
IGNORE = -100  # F.cross_entropy's default ignore_index


def torch_stack(config):
    """The torch layer of a Seq2Seq's encoder or decoder configuration."""
    extra = {"nonlinearity": config.nonlinearity} if config.kind == "RNN" else {}
    return TORCH_RNNS[config.kind](config.input_size, config.hidden_size, config.num_layers,
                                   bidirectional=config.num_directions == 2, **extra)


class Seq2SeqMirror(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.parts = model.cell.STATE_NAMES
        decoder = model.decoder
        if model.encoder is not None:
            self.source_embedding = torch.nn.Embedding(model.source_vocab_size, model.encoder.input_size)
            self.encoder = torch_stack(model.encoder)
        if model.bridge is not None:
            encoder = model.encoder
            width_in = model.features_size if encoder is None else (
                encoder.num_layers * encoder.num_directions * encoder.hidden_size)
            self.bridge = torch.nn.ModuleDict({
                part: torch.nn.Linear(width_in, decoder.num_layers * decoder.hidden_size) for part in self.parts
            })
        self.target_embedding = torch.nn.Embedding(model.target_vocab_size, decoder.input_size)
        self.decoder = torch_stack(decoder)
        self.head = torch.nn.Linear(decoder.hidden_size, model.target_vocab_size)
        self.load_state_dict({k: torch.tensor(v) for k, v in model.params.items()})  # strict

    def decoder_state(self, encoder_state, features):
        """The decoder's initial state, a tensor or LSTM's pair of (L_d, B, H_d)."""
        model = self.model
        L_d, H_d = model.decoder.num_layers, model.decoder.hidden_size
        if features is not None:
            parts = [features for _ in self.parts]
        else:
            parts = list(encoder_state) if isinstance(encoder_state, tuple) else [encoder_state]
            L_e, D = model.encoder.num_layers, model.encoder.num_directions
            per_layer = [p.view(L_e, D, p.shape[1], p.shape[2]) for p in parts]  # L_e,D,B,H_e
            if model.bridge is None:
                states = [p.sum(dim=1) for p in per_layer]
                return tuple(states) if len(states) > 1 else states[0]
            # each sequence's states: layer 0 forward, layer 0 backward, layer 1 forward, ...
            parts = [p.permute(2, 0, 1, 3).reshape(p.shape[2], -1) for p in per_layer]  # B,L_e*D*H_e
        states = []
        for name, flat in zip(self.parts, parts):
            out = self.bridge[name](flat)  # B,L_d*H_d
            if model.bridge == "tanh":
                out = torch.tanh(out)
            states.append(out.view(-1, L_d, H_d).transpose(0, 1).contiguous())
        return tuple(states) if len(states) > 1 else states[0]

    def forward(self, source, source_lengths, target, target_lengths):
        """The loss, and the encoder's input (the embedded source) or the features: the tensor
        whose gradient the tests compare with the model's ``dsource``."""
        model = self.model
        target = torch.as_tensor(target)
        T, B = target.shape
        if model.encoder is None:
            features, embedded = source, source
            encoder_state = None
        else:
            features = None
            embedded = self.source_embedding(torch.as_tensor(source))  # S,B,E_s
            inp = embedded
            if source_lengths is not None:
                inp = pack_padded_sequence(embedded, torch.as_tensor(source_lengths), enforce_sorted=False)
            _, encoder_state = self.encoder(inp)
        state = self.decoder_state(encoder_state, features)
        decoder_input = torch.cat([torch.full((1, B), model.start_id, dtype=target.dtype), target[:-1]])
        y, _ = self.decoder(self.target_embedding(decoder_input), state)  # T,B,H_d, no packing
        logits = self.head(y)  # T,B,V
        labels = target.clone()
        if target_lengths is not None:
            past_end = torch.arange(T)[:, None] >= torch.as_tensor(target_lengths)[None, :]
            labels[past_end] = IGNORE
        loss = F.cross_entropy(logits.reshape(T * B, -1), labels.reshape(-1), ignore_index=IGNORE,
                               reduction=model.reduction)
        return loss, embedded


def max_rel_err(ours, theirs):
    """max |ours - theirs| relative to max |theirs| (1 where theirs is all zero)."""
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    assert ours.shape == theirs.shape, (ours.shape, theirs.shape)
    scale = np.abs(theirs).max(initial=0.0)
    return float(np.abs(ours - theirs).max(initial=0.0) / (scale if scale > 0 else 1.0))


def torch_loss_and_grads(model, source, source_lengths, target, target_lengths):
    """The mirror's loss, every parameter's gradient (dict in the mirror's order) and the
    gradient of the encoder's input (the embedded source, or the features)."""
    mirror = Seq2SeqMirror(model)
    if model.encoder is None:
        source = torch.tensor(source, requires_grad=True)
    loss, embedded = mirror(source, source_lengths, target, target_lengths)
    names, tensors = zip(*mirror.named_parameters())
    found = torch.autograd.grad(loss, list(tensors) + [embedded])
    return loss.item(), {n: g.numpy() for n, g in zip(names, found[:-1])}, found[-1].numpy()
