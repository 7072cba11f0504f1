"""`hydra/launcher=ray` (conf/hydra/launcher/ray.yaml): see pipeline/cluster.py."""

from pipeline import cluster


class RayLauncher(cluster.RayLauncher):
    """Hydra's Ray launcher, made safe for the lab (pipeline.cluster.RayLauncher)."""
