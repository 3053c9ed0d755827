"""ClevrPolicy renderer throughput on one core: images rendered per second.

    python benchmarks/bench_render.py [--seconds 3] [--sizes 128 256 480x320]

For each size: scene graphs are sampled up front (not timed), then rendered to an image and to
PNG bytes (what the shards store). "cold" includes drawing every sprite the first time it is
needed (a fresh process); "warm" reuses the sprite cache, the steady state of a long run.
"""

from __future__ import annotations

import argparse
import random
import time

from mpi_ray.data.clevr_policy.__main__ import parse_image_size
from mpi_ray.data.clevr_policy.render import _background, object_sprite, render_png, render_scene
from mpi_ray.data.clevr_policy.scene import SceneGraph, sample_scene


def rate(scenes: list[SceneGraph], seconds: float, to_png: bool) -> float:
    """Images per second, cycling through `scenes` for about `seconds`."""
    render = render_png if to_png else render_scene
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        render(scenes[done % len(scenes)])
        done += 1
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per measurement")
    parser.add_argument("--sizes", nargs="+", type=parse_image_size, default=[(128, 128), (256, 256), (480, 320)])
    parser.add_argument("--scenes", type=int, default=500)
    args = parser.parse_args()
    print(f"{'size':>9}  {'cold png/s':>10}  {'warm png/s':>10}  {'warm image/s':>12}  {'png KiB':>7}")
    for width, height in args.sizes:
        rng = random.Random(f"bench:{width}x{height}")
        scenes = [sample_scene(rng, width, height) for _ in range(args.scenes)]
        object_sprite.cache_clear()
        _background.cache_clear()
        start = time.perf_counter()
        sizes = [len(render_png(scene)) for scene in scenes]
        cold = len(scenes) / (time.perf_counter() - start)
        warm_png = rate(scenes, args.seconds, to_png=True)
        warm_image = rate(scenes, args.seconds, to_png=False)
        print(f"{width:>4}x{height:<4}  {cold:>10.0f}  {warm_png:>10.0f}  {warm_image:>12.0f}  {sum(sizes) / len(sizes) / 1024:>7.1f}")


if __name__ == "__main__":
    main()
