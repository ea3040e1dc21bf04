"""Paths that may be URIs (``file://``, ``s3://``, ``gs://``, ...): reading, listing, local copies and uploads.

Every function takes a local path or a URI. Local paths go through ``os`` exactly as before; URIs go through
``pyarrow.fs.FileSystem.from_uri`` (credentials come from the environment, as pyarrow's S3 / GCS filesystems read
them). Three ideas:

- **Local copies** (:func:`local_copy`): transformers and vLLM load local directories, so a model (or an HF
  ``save_to_disk`` dataset) at a URI is downloaded once into ``$RCS_RAY_CACHE/remote/<key>`` (default
  ``~/.cache/rcs_ray``), keyed by the URI, and downloaded again only when the remote listing (names, sizes,
  mtimes) changed. Each node makes its own copy: Ray actors and train workers call it where they load the model.
- **Uploads** (:func:`upload`, :func:`write_text`): where the filesystem renames (local, HDFS), a file or directory
  is written under a temporary name and moved into place; object stores (S3, GCS) make each object visible at once.
- **Staged output directories** (:class:`StagedDir`): a step whose home is a URI works in a local mirror
  (``$RCS_RAY_CACHE/staging/<key>``) and publishes named outputs with :meth:`StagedDir.push`; :meth:`StagedDir.pull`
  fetches what a previous run (possibly elsewhere) left at the home. A local home is its own mirror (no copies).

Problems a user can fix (a missing remote path, an unknown scheme, a pyarrow built without that filesystem) raise
one-line :class:`~rcs_ray.errors.RcsInputError`, prefixed with the config key when the caller names one.
pyarrow is imported lazily. :mod:`rcs_ray.storage.files` holds the filesystem operations,
:mod:`rcs_ray.storage.mirror` the local copies and staged directories; both are re-exported here.
"""

from rcs_ray.storage.atomic import AtomicPath, DiskError, OutputSet, atomic_path, disk_error_in, writing
from rcs_ray.storage.files import (
    absolute,
    download,
    exists,
    is_uri,
    isdir,
    isfile,
    join,
    list_files,
    listing_hash,
    open_binary,
    open_text,
    parent,
    path_kind,
    read_text,
    require,
    resolve,
    upload,
    write_text,
)
from rcs_ray.storage.mirror import CACHE_ENV, StagedDir, cache_root, local_copy, remove, seed_cache, staging_dir

__all__ = [
    "AtomicPath",
    "CACHE_ENV",
    "DiskError",
    "OutputSet",
    "StagedDir",
    "absolute",
    "atomic_path",
    "cache_root",
    "disk_error_in",
    "download",
    "exists",
    "is_uri",
    "isdir",
    "isfile",
    "join",
    "list_files",
    "listing_hash",
    "local_copy",
    "open_binary",
    "open_text",
    "parent",
    "path_kind",
    "read_text",
    "remove",
    "require",
    "resolve",
    "seed_cache",
    "staging_dir",
    "upload",
    "write_text",
    "writing",
]
