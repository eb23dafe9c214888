"""Step 5: contrastive refinement of per-pixel features (pure torch).

A small head maps each (min-max scaled) feature vector to an L2-normalised
embedding. It is trained so that anomalous pixels of an image are close to
anomalous pixels of its nearest images and far from their normal pixels and
from the anomalous pixels of dissimilar images.

The head acts on every pixel independently, so a training step only needs
the few sampled pixel vectors: they are gathered first and projected after,
which is the same computation as projecting whole maps and then sampling,
at a tiny fraction of the cost.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

from .ops import init_linear_layers

__all__ = [
    "ContrastiveHead",
    "contrastive_margin_loss",
    "image_neighbors",
    "train_contrastive_head",
]


class ContrastiveHead(nn.Module):
    """Per-pixel projection C -> hidden -> out, L2-normalised (a 1x1-conv MLP).

    Parameters
    ----------
    in_channels : int
    hidden_channels : int, default=256
    out_channels : int, default=32
    generator : torch.Generator, default=None
        Source of the initial weights (torch's default distribution, see
        :func:`~skanomclust.nn.ops.init_linear_layers`); torch's global RNG
        is not used.
    """

    def __init__(
        self,
        in_channels: int,
        hidden_channels: int = 256,
        out_channels: int = 32,
        *,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        with torch.device("meta"):  # construction draws nothing from the global RNG
            self.net = nn.Sequential(
                nn.Linear(in_channels, hidden_channels),
                nn.ReLU(),
                nn.Linear(hidden_channels, out_channels),
            )
        self.to_empty(device="cpu")
        init_linear_layers(self, generator)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        """Embed (N, C) pixel vectors into (N, out_channels) unit vectors."""
        return F.normalize(self.net(vectors), dim=-1)

    def forward_maps(self, maps: torch.Tensor) -> torch.Tensor:
        """Embed (n, C, h, w) feature maps into (n, out_channels, h, w)."""
        n, c, h, w = maps.shape
        out = self(maps.permute(0, 2, 3, 1).reshape(-1, c))
        return out.reshape(n, h, w, -1).permute(0, 3, 1, 2)


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a[:, None, :] - b[None, :, :]).square().sum(-1).flatten()


def contrastive_margin_loss(same_pos, same_neg, close_pos, close_neg, counter_pos, margin=0.5):
    """Attraction of matching pixel kinds plus margin repulsion of mismatched ones.

    Attraction: mean squared distance of the image's anomalous pixels to the
    anomalous pixels of it and its close images, and likewise for normal
    pixels. Repulsion: mean of ``relu(margin - d)`` between the image's
    anomalous pixels and the close normal pixels, and between the close
    anomalous pixels and the anomalous pixels of dissimilar ("counter")
    images. Empty groups simply contribute no terms.

    Returns
    -------
    loss : Tensor (scalar) or None
        None when a side has no terms at all.
    """
    attract = torch.cat(
        [_squared_distances(same_pos, close_pos), _squared_distances(same_neg, close_neg)]
    )
    repulse = torch.cat(
        [
            torch.relu(margin - _squared_distances(same_pos, close_neg)),
            torch.relu(margin - _squared_distances(close_pos, counter_pos)),
        ]
    )
    if attract.numel() == 0 or repulse.numel() == 0:
        return None
    return attract.mean() + repulse.mean()


def image_neighbors(descriptors: torch.Tensor, n_neighbors: int = 3, chunk: int = 1024):
    """Closest and "counter" images by Euclidean distance of descriptors.

    Works in chunks of rows: memory O(n^2) for the distance ranks, never an
    (n, n, C) tensor.

    Returns
    -------
    close : LongTensor of shape (n, n_neighbors)
        The nearest other images.
    counter : LongTensor of shape (n, n - n // 2)
        The less similar half of the images.
    """
    n = descriptors.shape[0]
    close, counter = [], []
    for start in range(0, n, chunk):
        d = torch.cdist(descriptors[start : start + chunk], descriptors)
        rows = torch.arange(d.shape[0])
        d[rows, rows + start] = -1.0  # self first, then dropped
        order = torch.argsort(d, dim=1, stable=True)
        close.append(order[:, 1 : n_neighbors + 1])
        counter.append(order[:, n // 2 :])
    return torch.cat(close), torch.cat(counter)


def _sample(pool: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    if pool.numel() == 0:
        return pool
    return pool[torch.randint(pool.numel(), (size,), generator=generator)]


def train_contrastive_head(
    features: torch.Tensor,
    anomalous: torch.Tensor,
    close: torch.Tensor,
    counter: torch.Tensor,
    scale: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    hidden_channels: int = 256,
    out_channels: int = 32,
    n_epochs: int = 10,
    images_per_step: int = 1,
    own_pixels: int = 20,
    group_pixels: int = 50,
    n_counter_images: int = 5,
    margin: float = 0.5,
    lr: float = 5e-4,
    weight_decay: float = 0.01,
    generator: torch.Generator,
    device="cpu",
    progress: Callable[[int], None] | None = None,
):
    """Train a :class:`ContrastiveHead` on pixels labelled by thresholded anomaly maps.

    Parameters
    ----------
    features : Tensor of shape (n, C, h, w)
        Raw features, on the CPU or on ``device`` (only sampled pixels are
        read: they are gathered where the features are and moved to ``device``).
    anomalous : BoolTensor of shape (n, h, w)
        Pixel labels: True where the anomaly map is above the threshold.
    close, counter : LongTensor of shape (n, k) and (n, m)
        Neighbour images from :func:`image_neighbors`.
    scale : callable
        ``scale(vectors, image_index)`` -> scaled (N, C) vectors (per-image
        min-max scaling), on the device of ``features``.
    n_epochs : int, default=10
        Each epoch visits every image once as an anchor, in random order.
    images_per_step : int, default=1
        Anchors per optimisation step, their losses averaged. 1 is the paper's
        schedule (one step per image); more anchors per step give fewer, larger
        steps, which a GPU computes in about the time of one.
    own_pixels, group_pixels, n_counter_images : int
        Anomalous/normal pixels sampled from the anchor image (20), from it
        and its close images (50), and how many counter images give 50
        anomalous pixels (5).
    generator : torch.Generator
        Sole source of randomness (initialisation, order, sampling), on the CPU.

    Returns
    -------
    head : ContrastiveHead
        In eval mode, on ``device``.
    losses : list of float
        Mean loss of each epoch.
    """
    n, c, h, w = features.shape
    positives = [torch.nonzero(a.flatten()).flatten() for a in anomalous]
    negatives = [torch.nonzero(~a.flatten()).flatten() for a in anomalous]

    def pool(images, kind):
        idx = [(i, kind[i]) for i in images.tolist()]
        images_col = torch.cat([torch.full((len(p),), i, dtype=torch.long) for i, p in idx])
        pixels_col = torch.cat([p for _, p in idx])
        return images_col * (h * w) + pixels_col

    def sample_anchor(anchor):
        own = torch.tensor([anchor])
        group = torch.cat([close[anchor], own])
        picks = counter[anchor][
            torch.randint(counter.shape[1], (n_counter_images,), generator=generator)
        ]
        return [
            _sample(pool(own, positives), own_pixels, generator),
            _sample(pool(own, negatives), own_pixels, generator),
            _sample(pool(group, positives), group_pixels, generator),
            _sample(pool(group, negatives), group_pixels, generator),
            _sample(pool(picks, positives), group_pixels, generator),
        ]

    def gather(codes):
        codes = codes.to(features.device)
        images, pixels = codes // (h * w), codes % (h * w)
        # indexing the (n, C, h, w) tensor directly: no (n, h * w, C) copy of all features
        vectors = features[images, :, pixels // w, pixels % w].float()
        return scale(vectors, images).to(device)

    head = ContrastiveHead(c, hidden_channels, out_channels, generator=generator)
    head = head.to(device).train()
    optimizer = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    losses = []
    for epoch in range(n_epochs):
        total, steps = torch.zeros((), device=device), 0  # summed on the device: no sync
        order = torch.randperm(n, generator=generator).tolist()
        for start in range(0, n, images_per_step):
            groups = [sample_anchor(anchor) for anchor in order[start : start + images_per_step]]
            groups = [codes for codes in groups if sum(len(code) for code in codes)]
            if not groups:
                continue
            sizes = [len(code) for codes in groups for code in codes]
            embedded = torch.split(head(gather(torch.cat([x for g in groups for x in g]))), sizes)
            anchor_losses = [
                contrastive_margin_loss(*embedded[5 * i : 5 * i + 5], margin=margin)
                for i in range(len(groups))
            ]
            anchor_losses = [loss for loss in anchor_losses if loss is not None]
            if not anchor_losses:
                continue
            loss = torch.stack(anchor_losses).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach()
            steps += 1
        losses.append(float(total) / max(steps, 1))
        if progress is not None:
            progress(epoch)
    return head.eval(), losses
