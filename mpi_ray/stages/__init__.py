"""Pipeline stages: each is one module with `run(ctx) -> outputs`, registered in mpi_ray.pipeline."""
