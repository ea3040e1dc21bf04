"""The RCS sampling pipeline (Ray Data + vLLM / HF engines + reward scorers + the RC filter).

``rcs_ray.sampling.run(cfg)`` samples one stage; see :mod:`rcs_ray.sampling.pipeline`. Importing this package is
cheap: Ray, vLLM and torch load only when a pipeline runs.
"""


def run(cfg, stage=None, policy=None, out_dir=None, progress=True, chain=None):
    from rcs_ray.sampling.pipeline import run as _run

    return _run(cfg, stage=stage, policy=policy, out_dir=out_dir, progress=progress, chain=chain)
