"""Eager PyTorch replicas of keras_vae's preset networks, likelihoods and losses.

Used by `vs_pytorch.py` only (in a process of its own, which never imports
TensorFlow). Each replica is what a PyTorch user would write for the same
model: `nn.Module`s in the default NCHW layout, the same layers, widths,
activations and output heads as `keras_vae.networks` /
`keras_vae.sequence_networks`, the same likelihood maths as
`keras_vae.likelihoods` (every branch of the discretized logistic computed,
as there), the same objective as `keras_vae.models` (vae, iwae, iaf,
sequence_vae), and `torch.optim.Adam` with Keras' defaults (eps 1e-7).
A training step is `zero_grad -> loss -> backward -> step`, eagerly.

Correspondences (Keras -> here):

    Conv2D(f, 4, strides=2, padding="same")           Conv2d(c, f, 4, 2, padding=1)
    Conv2DTranspose(f, 4, strides=2, padding="same")  ConvTranspose2d(c, f, 4, 2, padding=1)
    Dense(u)                                          Linear(n, u)
    SoftClip(-10, 10) on log_var                      SoftClip below
    GRU(u) (reset_after=True: Keras' default)         nn.GRU (the same gate formula)
    Embedding(mask_zero=True) + masked (Bi)GRU        pack_padded_sequence + nn.GRU
    IAFFlow (MADE, masks of keras_vae.models.iaf)     IAFFlow below (the same masks)

Parameter counts equal Keras' exactly (`vs_pytorch.py` prints both and
stops on a difference). Shapes and numbers of operations match; values do
not (other initializers, other random draws), which does not change speed.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence

LOG_2PI = math.log(2.0 * math.pi)
LOG_VAR_BOUNDS = (-10.0, 10.0)
MIN_LOG_SCALE = -7.0 - math.log(2.0)  # keras_vae.likelihoods.MIN_LOG_SCALE
PAD, UNK, BOS = 0, 1, 2  # keras_vae.data.tokens


# -- layers ------------------------------------------------------------------------


class SoftClip(nn.Module):
    """keras_vae.layers.SoftClip: low + (high - low) * sigmoid(4 (x - mid) / (high - low))."""

    def __init__(self, low, high):
        super().__init__()
        self.low, self.high = float(low), float(high)

    def forward(self, x):
        width = self.high - self.low
        mid = 0.5 * (self.high + self.low)
        return self.low + width * torch.sigmoid(4.0 * (x - mid) / width)


class Heads(nn.Module):
    """The encoder's float32 heads: mean and softly bounded log-variance."""

    def __init__(self, features, latent_dim):
        super().__init__()
        self.mean = nn.Linear(features, latent_dim)
        self.raw_log_var = nn.Linear(features, latent_dim)
        self.clip = SoftClip(*LOG_VAR_BOUNDS)

    def forward(self, h):
        return self.mean(h), self.clip(self.raw_log_var(h))


class ConvEncoder(nn.Module):
    def __init__(self, image_shape, latent_dim, widths, dense_units):
        super().__init__()
        height, width, channels = image_shape
        layers, c, h, w = [], channels, height, width
        for filters in widths:
            layers += [nn.Conv2d(c, filters, 4, 2, padding=1), nn.ReLU()]
            c, h, w = filters, math.ceil(h / 2), math.ceil(w / 2)
        self.convs = nn.Sequential(*layers)
        self.dense = nn.Linear(h * w * c, dense_units)
        self.heads = Heads(dense_units, latent_dim)

    def forward(self, x):  # (B, C, H, W)
        h = self.convs(x).flatten(1)
        return self.heads(F.relu(self.dense(h)))


class MLPEncoder(nn.Module):
    def __init__(self, image_shape, latent_dim, widths):
        super().__init__()
        layers, n = [], math.prod(image_shape)
        for units in widths:
            layers += [nn.Linear(n, units), nn.ReLU()]
            n = units
        self.hidden = nn.Sequential(*layers)
        self.heads = Heads(n, latent_dim)

    def forward(self, x):
        return self.heads(self.hidden(x.flatten(1)))


class ConvDecoder(nn.Module):
    """z -> (B, out_channels, H, W): Dense, Dense to a grid, stride-2 ConvTranspose2d."""

    def __init__(self, image_shape, latent_dim, widths, dense_units, out_channels):
        super().__init__()
        height, width, _ = image_shape
        scale = 2 ** len(widths)
        self.base = (math.ceil(height / scale), math.ceil(width / scale))
        self.crop = (self.base[0] * scale - height, self.base[1] * scale - width)
        self.channels = widths[-1]
        self.dense1 = nn.Linear(latent_dim, dense_units)
        self.dense2 = nn.Linear(dense_units, self.base[0] * self.base[1] * widths[-1])
        layers, c = [], widths[-1]
        for filters in reversed(widths[:-1]):
            layers += [nn.ConvTranspose2d(c, filters, 4, 2, padding=1), nn.ReLU()]
            c = filters
        layers.append(nn.ConvTranspose2d(c, out_channels, 4, 2, padding=1))
        self.deconvs = nn.Sequential(*layers)

    def forward(self, z):
        h = F.relu(self.dense2(F.relu(self.dense1(z))))
        out = self.deconvs(h.view(-1, self.channels, *self.base))
        ch, cw = self.crop
        if ch or cw:
            h, w = out.shape[2], out.shape[3]
            out = out[:, :, ch // 2 : h - (ch - ch // 2), cw // 2 : w - (cw - cw // 2)]
        return out


class MLPDecoder(nn.Module):
    def __init__(self, image_shape, latent_dim, widths, out_channels):
        super().__init__()
        height, width, _ = image_shape
        self.out_shape = (out_channels, height, width)
        layers, n = [], latent_dim
        for units in reversed(widths):
            layers += [nn.Linear(n, units), nn.ReLU()]
            n = units
        layers.append(nn.Linear(n, height * width * out_channels))
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z).view(-1, *self.out_shape)


# -- likelihoods (keras_vae.likelihoods, on NCHW) -------------------------------------


def bernoulli_log_prob(x, logits):
    return (x * logits - F.softplus(logits)).flatten(1).sum(1)


def discretized_logistic_log_prob(x, mean, log_scale, num_bins=256):
    """keras_vae.likelihoods.discretized_logistic_log_prob, op for op."""
    half = 0.5 / (num_bins - 1)
    inv_s = torch.exp(-log_scale)
    centered = x - mean
    plus_in = inv_s * (centered + half)
    min_in = inv_s * (centered - half)
    mid_in = inv_s * centered
    log_cdf_plus = plus_in - F.softplus(plus_in)
    log_one_minus_cdf_min = -F.softplus(min_in)
    upper = mid_in > 0
    a = torch.where(upper, -min_in, plus_in)
    b = torch.where(upper, -plus_in, min_in)
    cdf_delta = torch.sigmoid(a) - torch.sigmoid(b)
    log_pdf_mid = mid_in - log_scale - 2.0 * F.softplus(mid_in) + math.log(2.0 * half)
    log_prob_inner = torch.where(
        cdf_delta > 1e-5, torch.log(torch.clamp(cdf_delta, min=1e-12)), log_pdf_mid
    )
    log_prob = torch.where(
        x < half,
        log_cdf_plus,
        torch.where(x > 1.0 - half, log_one_minus_cdf_min, log_prob_inner),
    )
    return log_prob.flatten(1).sum(1)


def log_prob(likelihood, x, params):
    """`(B,)` log p(x | params); params `(B, num_params * C, H, W)`."""
    if likelihood == "bernoulli":
        return bernoulli_log_prob(x, params)
    if likelihood == "discretized_logistic":
        mean, log_scale = torch.chunk(params, 2, dim=1)
        return discretized_logistic_log_prob(x, mean, torch.clamp(log_scale, min=MIN_LOG_SCALE))
    raise ValueError(f"no replica of likelihood {likelihood!r}")


NUM_PARAMS = {"bernoulli": 1, "discretized_logistic": 2}


def gaussian_kl(mean, log_var):
    return (0.5 * (torch.exp(log_var) + mean.square() - 1.0 - log_var)).sum(-1)


# -- image models -------------------------------------------------------------------


def build_networks(spec):
    shape, latent = tuple(spec["image_shape"]), spec["latent_dim"]
    out_channels = shape[-1] * NUM_PARAMS[spec["likelihood"]]
    if spec["network"] == "conv":
        encoder = ConvEncoder(shape, latent, spec["widths"], spec["dense_units"])
        decoder = ConvDecoder(shape, latent, spec["widths"], spec["dense_units"], out_channels)
    else:
        encoder = MLPEncoder(shape, latent, spec["widths"])
        decoder = MLPDecoder(shape, latent, spec["widths"], out_channels)
    return encoder, decoder


class VAE(nn.Module):
    """loss = mean(-log p(x|z)) + beta * mean(KL), z = mean + exp(log_var / 2) * eps."""

    def __init__(self, spec):
        super().__init__()
        self.encoder, self.decoder = build_networks(spec)
        self.likelihood = spec["likelihood"]
        self.beta = float(spec.get("beta", 1.0))

    def loss(self, x, step):
        mean, log_var = self.encoder(x)
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        log_px = log_prob(self.likelihood, x, self.decoder(z))
        return -log_px.mean() + self.beta * gaussian_kl(mean, log_var).mean()


class IWAE(VAE):
    """-mean_batch [logsumexp_k log w_k - log K], K codes decoded in one call."""

    def __init__(self, spec):
        super().__init__(spec)
        self.k = int(spec["k"])

    def loss(self, x, step):
        mean, log_var = self.encoder(x)  # (B, D)
        eps = torch.randn((self.k, *mean.shape))  # (K, B, D)
        z = mean + torch.exp(0.5 * log_var) * eps
        batch = x.shape[0]
        x_flat = x.unsqueeze(0).expand(self.k, *x.shape).reshape(self.k * batch, *x.shape[1:])
        params = self.decoder(z.reshape(self.k * batch, -1))
        log_px = log_prob(self.likelihood, x_flat, params).view(self.k, batch)
        log_pz = -0.5 * (LOG_2PI + z.square()).sum(-1)
        log_qz = -0.5 * (LOG_2PI + log_var + eps.square()).sum(-1)
        log_w = log_px + log_pz - log_qz  # (K, B)
        return -(torch.logsumexp(log_w, dim=0) - math.log(self.k)).mean()


def made_masks(latent_dim, units, reverse=False):
    """keras_vae.models.iaf.made_masks."""
    degrees = np.arange(1, latent_dim + 1)
    if reverse:
        degrees = degrees[::-1]
    hidden = np.arange(units) % max(latent_dim - 1, 1) + 1
    mask_in = (hidden[None, :] >= degrees[:, None]).astype("float32")
    mask_out = (degrees[None, :] > hidden[:, None]).astype("float32")
    return torch.from_numpy(mask_in), torch.from_numpy(mask_out)


class IAFFlow(nn.Module):
    """keras_vae.models.iaf.IAFFlow: T MADE steps, order reversed between steps."""

    def __init__(self, latent_dim, steps, units, s_bias=2.0):
        super().__init__()
        d, h = latent_dim, units
        self.steps = steps
        self.w_z = nn.ParameterList([nn.Parameter(torch.randn(d, h) * 0.1) for _ in range(steps)])
        self.w_c = nn.ParameterList(
            [nn.Parameter(torch.randn(2 * d, h) * 0.1) for _ in range(steps)]
        )
        self.b_h = nn.ParameterList([nn.Parameter(torch.zeros(h)) for _ in range(steps)])
        self.w_m = nn.ParameterList([nn.Parameter(torch.randn(h, d) * 0.1) for _ in range(steps)])
        self.b_m = nn.ParameterList([nn.Parameter(torch.zeros(d)) for _ in range(steps)])
        self.w_s = nn.ParameterList([nn.Parameter(torch.randn(h, d) * 0.1) for _ in range(steps)])
        self.b_s = nn.ParameterList([nn.Parameter(torch.full((d,), s_bias)) for _ in range(steps)])
        for t in range(steps):
            mask_in, mask_out = made_masks(d, h, t % 2 == 1)
            self.register_buffer(f"mask_in{t}", mask_in)
            self.register_buffer(f"mask_out{t}", mask_out)

    def forward(self, z, context):
        log_sigma = torch.zeros_like(z)
        for t in range(self.steps):
            mask_in, mask_out = getattr(self, f"mask_in{t}"), getattr(self, f"mask_out{t}")
            hidden = F.relu(z @ (self.w_z[t] * mask_in) + context @ self.w_c[t] + self.b_h[t])
            m = hidden @ (self.w_m[t] * mask_out) + self.b_m[t]
            s = hidden @ (self.w_s[t] * mask_out) + self.b_s[t]
            sigma = torch.sigmoid(s)
            z = sigma * z + (1.0 - sigma) * m
            log_sigma = log_sigma + F.logsigmoid(s)
        return z, log_sigma


class IAF(VAE):
    """The VAE with T IAF steps on z_0; the KL is the one-sample estimate per dimension."""

    def __init__(self, spec):
        super().__init__(spec)
        self.flow = IAFFlow(spec["latent_dim"], spec["flow_steps"], spec["flow_units"])

    def loss(self, x, step):
        mean, log_var = self.encoder(x)
        eps = torch.randn_like(mean)
        z0 = mean + torch.exp(0.5 * log_var) * eps
        z, log_sigma = self.flow(z0, torch.cat([mean, log_var], dim=-1))
        log_q = -0.5 * (LOG_2PI + eps.square() + log_var) - log_sigma
        log_pz = -0.5 * (LOG_2PI + z.square())
        log_px = log_prob(self.likelihood, x, self.decoder(z))
        return -log_px.mean() + self.beta * (log_q - log_pz).sum(-1).mean()


# -- the sequence VAE -----------------------------------------------------------------


class SequenceEncoder(nn.Module):
    """Embedding -> (bidirectional) GRU over the unpadded tokens -> final states -> heads."""

    def __init__(self, vocab_size, latent_dim, units, embedding_dim, bidirectional=True):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.gru = nn.GRU(embedding_dim, units, batch_first=True, bidirectional=bidirectional)
        self.heads = Heads(units * (2 if bidirectional else 1), latent_dim)

    def forward(self, tokens, lengths):
        # The Keras encoder masks the padding (mask_zero): its state is the one
        # after the end token. Packing the sequences is PyTorch's way to that.
        packed = pack_padded_sequence(
            self.embedding(tokens), lengths, batch_first=True, enforce_sorted=False
        )
        _, h = self.gru(packed)  # (directions, B, units)
        return self.heads(torch.cat(list(h), dim=-1))


class SequenceDecoder(nn.Module):
    """z -> tanh initial state; GRU over [embedded input token, z] at every step -> logits."""

    def __init__(self, vocab_size, latent_dim, units, embedding_dim):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embedding_dim)
        self.state = nn.Linear(latent_dim, units)
        self.gru = nn.GRU(embedding_dim + latent_dim, units, batch_first=True)
        self.logits = nn.Linear(units, vocab_size)

    def forward(self, z, tokens):
        embedded = self.embedding(tokens)  # (B, T, E)
        z_every_step = z.unsqueeze(1).expand(-1, tokens.shape[1], -1)
        h0 = torch.tanh(self.state(z)).unsqueeze(0)
        outputs, _ = self.gru(torch.cat([embedded, z_every_step], dim=-1), h0)
        return self.logits(outputs)  # (B, T, V)


class SequenceVAE(nn.Module):
    """Teacher-forced categorical likelihood, word dropout, linearly annealed KL."""

    def __init__(self, spec):
        super().__init__()
        v, d = spec["vocab_size"], spec["latent_dim"]
        units, emb = spec["rnn_units"], spec["embedding_dim"]
        self.encoder = SequenceEncoder(v, d, units, emb, spec["bidirectional"])
        self.decoder = SequenceDecoder(v, d, units, emb)
        self.word_dropout = float(spec["word_dropout"])
        self.beta = float(spec.get("beta", 1.0))
        self.warmup_steps = int(spec.get("warmup_steps", 0))

    def loss(self, x, step):
        lengths = (x != PAD).sum(1)
        mean, log_var = self.encoder(x, lengths)
        z = mean + torch.exp(0.5 * log_var) * torch.randn_like(mean)
        previous = x[:, :-1]
        if self.word_dropout > 0:
            keep = torch.rand(previous.shape)
            previous = torch.where(keep >= self.word_dropout, previous, UNK)
        inputs = torch.cat([torch.full((x.shape[0], 1), BOS, dtype=x.dtype), previous], dim=1)
        logits = self.decoder(z, inputs)
        picked = torch.log_softmax(logits, dim=-1).gather(-1, x.unsqueeze(-1)).squeeze(-1)
        log_px = (picked * (x != PAD).float()).sum(-1)
        beta = self.beta
        if self.warmup_steps > 0:
            beta *= min(1.0, step / self.warmup_steps)
        return -log_px.mean() + beta * gaussian_kl(mean, log_var).mean()


MODELS = {"vae": VAE, "iwae": IWAE, "iaf": IAF, "sequence_vae": SequenceVAE}


# -- training -----------------------------------------------------------------------


class Trainer:
    """One replica, its Adam, and the in-memory batches it cycles through."""

    def __init__(self, spec, batches, seed=0):
        torch.manual_seed(seed)
        self.model = MODELS[spec["model"]](spec)
        # Keras' Adam defaults (beta_1 0.9, beta_2 0.999, epsilon 1e-7).
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=spec["learning_rate"], eps=1e-7
        )
        if spec["model"] == "sequence_vae":
            self.batches = [torch.from_numpy(b.astype(np.int64)) for b in batches]
        else:  # NHWC -> NCHW, contiguous
            self.batches = [torch.from_numpy(np.ascontiguousarray(b.transpose(0, 3, 1, 2)))
                            for b in batches]  # fmt: skip
        self.step_count = 0

    @property
    def num_params(self):
        return sum(p.numel() for p in self.model.parameters())

    def step(self):
        x = self.batches[self.step_count % len(self.batches)]
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.model.loss(x, self.step_count)
        loss.backward()
        self.optimizer.step()
        self.step_count += 1
        return loss
