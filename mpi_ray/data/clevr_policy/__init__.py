"""ClevrPolicy: CLEVR-like scenes we render ourselves, decision-tree policies (-T text, -M with
pictures), gold answers and CoT targets, written as Parquet shards in the one sample schema.

    python -m mpi_ray.data.clevr_policy --depth 6 --variant T --out DIR

Modules, one job each: ontology (attributes), camera + scene (scene graphs), render (Pillow),
tree (policies and their evaluation), policy_doc (tree -> policy document), cot (CoT targets),
sampling (leaf-balanced scenes), general (policy-free questions), records (schema rows),
generator (a whole setting: policies, splits, shards, manifest).
"""

from mpi_ray.data.clevr_policy.generator import GeneratorConfig, generate

__all__ = ["GeneratorConfig", "generate"]
