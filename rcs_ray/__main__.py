import sys

from rcs_ray.cli import main

sys.exit(main())
