"""SSD's default boxes, box coding and post-processing (Liu et al. 2016, Sections 2.2-2.3), as SSDLite
uses them (V2 Section 6.2).

Default boxes: on map k of m, scale s_k = s_min + (s_max - s_min) k / (m - 1) (0.2 to 0.95), boxes of
aspect ratio 1 at s_k and at sqrt(s_k s_{k+1}), and of ratios 2, 1/2, 3, 1/3 at s_k, centred on every
cell; torchvision's DefaultBoxGenerator([[2, 3]] * 6, 0.2, 0.95) exactly. TF's layout
(``first_map_boxes=3``) puts (0.1, ratio 1), (s_0, 2) and (s_0, 1/2) on the first map.

Box coding: offsets (dx, dy, dw, dh) of a box from its default box, scaled by (10, 10, 5, 5).
"""

from __future__ import annotations

import math

import torch
from torchvision.ops import batched_nms

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
MAX_LOG_SCALE = math.log(1000.0 / 16)  # torchvision's clamp of dw, dh before exp


def box_scales(maps: int, min_scale: float = 0.2, max_scale: float = 0.95) -> list[float]:
    """s_0 .. s_{m-1}, and 1.0 for the geometric mean of the last map's second square box."""
    return [min_scale + (max_scale - min_scale) * k / (maps - 1) for k in range(maps)] + [1.0]


def box_shapes(maps: int, first_map_boxes: int = 6) -> list[torch.Tensor]:
    """Per map, the (width, height) of its default boxes, relative to the image, clipped to 1."""
    scales = box_scales(maps)
    shapes = []
    for k in range(maps):
        s, s_next = scales[k], scales[k + 1]
        if k == 0 and first_map_boxes == 3:
            pairs = [[0.1, 0.1], [s * math.sqrt(2), s / math.sqrt(2)], [s / math.sqrt(2), s * math.sqrt(2)]]
        else:
            pairs = [[s, s], [math.sqrt(s * s_next)] * 2]
            for ratio in (2, 3):
                pairs += [
                    [s * math.sqrt(ratio), s / math.sqrt(ratio)],
                    [s / math.sqrt(ratio), s * math.sqrt(ratio)],
                ]
        shapes.append(torch.tensor(pairs).clamp(max=1.0))
    return shapes


def default_boxes(
    map_sizes: list[tuple[int, int]], image_size: tuple[int, int], first_map_boxes: int = 6
) -> torch.Tensor:
    """(boxes, 4) default boxes as (x1, y1, x2, y2) in pixels of an ``image_size`` (height, width) input,
    in the order the heads predict them: map, row, column, box."""
    height, width = image_size
    boxes = []
    for (rows, cols), shapes in zip(map_sizes, box_shapes(len(map_sizes), first_map_boxes), strict=True):
        y = (torch.arange(rows, dtype=torch.float32) + 0.5) / rows
        x = (torch.arange(cols, dtype=torch.float32) + 0.5) / cols
        cy, cx = torch.meshgrid(y, x, indexing="ij")
        centres = torch.stack([cx.reshape(-1), cy.reshape(-1)], 1).repeat_interleave(len(shapes), 0)
        sizes = shapes.repeat(rows * cols, 1)
        boxes.append(torch.cat([centres, sizes], 1))
    cxcywh = torch.cat(boxes) * torch.tensor([width, height, width, height], dtype=torch.float32)
    half = cxcywh[:, 2:] / 2
    return torch.cat([cxcywh[:, :2] - half, cxcywh[:, :2] + half], 1)


def decode(regression: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """Boxes (x1, y1, x2, y2) from offsets (..., 4) against default boxes (..., 4)."""
    wx, wy, ww, wh = BOX_WEIGHTS
    widths = anchors[..., 2] - anchors[..., 0]
    heights = anchors[..., 3] - anchors[..., 1]
    cx = anchors[..., 0] + 0.5 * widths
    cy = anchors[..., 1] + 0.5 * heights
    dx, dy = regression[..., 0] / wx, regression[..., 1] / wy
    dw = (regression[..., 2] / ww).clamp(max=MAX_LOG_SCALE)
    dh = (regression[..., 3] / wh).clamp(max=MAX_LOG_SCALE)
    px, py = dx * widths + cx, dy * heights + cy
    pw, ph = torch.exp(dw) * widths, torch.exp(dh) * heights
    return torch.stack([px - 0.5 * pw, py - 0.5 * ph, px + 0.5 * pw, py + 0.5 * ph], -1)


def encode(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """The offsets that :func:`decode` turns back into ``boxes`` (training targets)."""
    wx, wy, ww, wh = BOX_WEIGHTS
    aw, ah = anchors[..., 2] - anchors[..., 0], anchors[..., 3] - anchors[..., 1]
    ax, ay = anchors[..., 0] + 0.5 * aw, anchors[..., 1] + 0.5 * ah
    bw, bh = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
    bx, by = boxes[..., 0] + 0.5 * bw, boxes[..., 1] + 0.5 * bh
    return torch.stack(
        [wx * (bx - ax) / aw, wy * (by - ay) / ah, ww * torch.log(bw / aw), wh * torch.log(bh / ah)], -1
    )


def postprocess(
    logits: torch.Tensor,
    regression: torch.Tensor,
    anchors: torch.Tensor,
    image_size: tuple[int, int],
    score_threshold: float = 0.001,
    nms_threshold: float = 0.55,
    candidates_per_class: int = 300,
    max_detections: int = 300,
) -> list[dict[str, torch.Tensor]]:
    """Per image: softmax scores, boxes decoded and clipped to the image, for each class but the
    background the ``candidates_per_class`` best above ``score_threshold``, then per-class NMS and the
    ``max_detections`` best: {"boxes" (n, 4) x1 y1 x2 y2 in pixels, "scores" (n,), "labels" (n,)}.
    torchvision's SSD post-processing, step for step."""
    height, width = image_size
    scores_all = torch.softmax(logits, -1)
    detections = []
    for scores, offsets in zip(scores_all, regression, strict=True):
        boxes = decode(offsets, anchors)
        boxes = torch.stack(
            [
                boxes[:, 0].clamp(0, width),
                boxes[:, 1].clamp(0, height),
                boxes[:, 2].clamp(0, width),
                boxes[:, 3].clamp(0, height),
            ],
            1,
        )
        kept_boxes, kept_scores, kept_labels = [], [], []
        for label in range(1, scores.shape[1]):
            score = scores[:, label]
            above = score > score_threshold
            score, box = score[above], boxes[above]
            score, order = score.topk(min(candidates_per_class, score.numel()))
            kept_boxes.append(box[order])
            kept_scores.append(score)
            kept_labels.append(torch.full_like(order, label))
        boxes, scores, labels = torch.cat(kept_boxes), torch.cat(kept_scores), torch.cat(kept_labels)
        keep = batched_nms(boxes, scores, labels, nms_threshold)[:max_detections]
        detections.append({"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]})
    return detections
