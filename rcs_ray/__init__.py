"""rcs-ray: Reward Consistency Sampling (RCS) for multi-objective preference alignment on Ray.

The pure core (``rcs_ray.rc``, ``rcs_ray.config``, ``rcs_ray.data``) imports no Ray, vLLM or DeepSpeed;
those live at the edges (sampling, training, jobs).
"""

__version__ = "0.1.0"
