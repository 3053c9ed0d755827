"""mpi-ray: Multimodal Policy Internalization (TriMPI) on Ray."""
__version__ = "0.1.0"
