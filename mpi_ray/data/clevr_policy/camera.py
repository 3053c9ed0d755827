"""A fixed pseudo-3D camera: ground-plane coordinates -> pixels, with perspective shrinking.

The ground is the square [-3, 3] x [-3, 3] (CLEVR's extent); x runs left to right, y runs from
near (bottom of the image) to far (top). Everything scales with the image height, so a scene
graph renders the same at any resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

WORLD_HALF = 3.0
CAMERA_OFFSET = 10.0  # depth of the ground point y is y + CAMERA_OFFSET: near 7, far 13
_NEAR, _FAR = CAMERA_OFFSET - WORLD_HALF, CAMERA_OFFSET + WORLD_HALF
_NEAR_ROW, _FAR_ROW = 0.93, 0.36  # ground-contact rows (fraction of height) at the near and far edge
_NEAR_HALF_SPREAD = 0.42  # x = +-3 at the near edge lands this fraction of the width from the center
_NEAR_LARGE_RADIUS = 0.13  # a large object (world radius 0.7) at the near edge: this fraction of the height
SILHOUETTE_EXTENT = 1.3  # every shape's silhouette fits within this many pixel radii of its center


@dataclass(frozen=True)
class Projection:
    """Where an object of world radius r at (x, y) lands: its visual center and pixel radius."""

    center_x: float
    center_y: float
    radius: float

    @property
    def contact_y(self) -> float:
        """The row where the object touches the ground (its shadow sits there)."""
        return self.center_y + self.radius


def project(x: float, y: float, world_radius: float, width: int, height: int) -> Projection:
    depth = y + CAMERA_OFFSET
    row_gain = (_NEAR_ROW - _FAR_ROW) * height / (1 / _NEAR - 1 / _FAR)
    horizon = _NEAR_ROW * height - row_gain / _NEAR
    contact_y = horizon + row_gain / depth
    center_x = width / 2 + x * (_NEAR_HALF_SPREAD * width * _NEAR / WORLD_HALF) / depth
    radius = world_radius * (_NEAR_LARGE_RADIUS * height * _NEAR / 0.7) / depth
    return Projection(center_x=center_x, center_y=contact_y - radius, radius=radius)
