"""Pipeline stages: each is one module with `run(ctx) -> outputs`, named as in mpi_ray.config.schema.STAGES."""
