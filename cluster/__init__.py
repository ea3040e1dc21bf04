"""A real multi-node Ray cluster on one machine (:mod:`cluster.local_cluster`), and the cluster configs beside it
(KubeRay, the Ray cluster launcher, the job's runtime env)."""
